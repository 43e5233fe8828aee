"""CurveZMQ encryption and key-based authentication for links that leave the machine.

These frames show the inside of someone's home. Any endpoint that is not loopback is encrypted and
authenticated with CurveZMQ, on by default and with no opt-out: the compositor (server) only accepts
workers whose public keys are in its ``authorized/`` folder (ZAP via ``zmq.auth``), and a worker
only talks to the compositor whose public key it was given. Loopback links stay plain: they never
leave the machine and the encryption would only cost CPU.

Key folder made by ``python -m inference keys DIR --worker NAME``::

    DIR/compositor.key_secret        the compositor's key pair (stays on the compositor's machine)
    DIR/authorized/NAME.key          public keys of the workers the compositor accepts
    DIR/worker-NAME/worker.key_secret + compositor.key   copy this folder to the worker's machine

Local links over TCP (``launch.py --links tcp``, for systems without Unix sockets) are reachable by
every account on the machine, so they are CurveZMQ-encrypted too, with a key made for this run
only (``make_link_key``) in the launcher's private folder (0700): a process that cannot read that
folder cannot complete the handshake (the client must know the server's public key), so it gets
no frame and cannot send a key command. No ZAP there: knowing this run's key is the credential.

Every key file is parsed when a stage starts (``server_keys``, ``client_keys``): a bad file is one
line naming it and a non-zero exit. Why: ``zmq.auth`` logs an unparsable file in ``authorized/``
to nobody and then refuses *every* worker, which hides 100 % of the frames without a word.
Folders are created 0700 and secret keys 0600.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from common.endpoints import is_loopback
from common.errors import FatalError

SERVER = "compositor"
WORKER = "worker"
LINK = "link"  # this run's key for TCP links between local stages (``make_link_key``)


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: Path  # folder of accepted worker public keys, every file checked
    workers: tuple[str, ...]  # their names (file stems)


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes
    folder: Path


def _valid_key(key: bytes | None) -> bool:
    if key is None or len(key) != 40:
        return False
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def load_key(path: Path, what: str, secret: bool = False) -> tuple[bytes, bytes | None]:
    """(public, secret) of a key file; ``FatalError`` naming the file if it is not a valid one."""
    try:
        public, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:  # ValueError includes UnicodeDecodeError (binary junk)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FatalError(f"cannot read {what} {path}: {reason}") from None
    if not _valid_key(public):
        raise FatalError(f"{what} {path} does not hold a valid CurveZMQ public key")
    if secret and not _valid_key(sec):
        raise FatalError(f"{what} {path} does not hold a valid CurveZMQ secret key")
    return public, sec


def key_folder(keys: Path, *, write: bool = False) -> Path:
    """``keys`` checked as a usable folder (one line if it is a file or not readable/writable)."""
    if keys.exists() and not keys.is_dir():
        raise FatalError(f"--keys {keys} is a file; give the key folder instead")
    if not keys.is_dir():
        raise FatalError(f"--keys {keys}: no such folder ('python -m inference keys' makes it)")
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(keys, mode):
        need = "readable and writable" if write else "readable"
        raise FatalError(f"key folder {keys} is not {need} by this user")
    return keys


def server_keys(keys: Path) -> ServerKeys:
    """The compositor's key pair and every authorized worker key, each file checked."""
    key_folder(keys)
    public, secret = load_key(keys / f"{SERVER}.key_secret", "the compositor's secret key", True)
    authorized = keys / "authorized"
    if not authorized.is_dir() or not os.access(authorized, os.R_OK | os.X_OK):
        raise FatalError(f"no readable folder {authorized} of authorized worker keys")
    files = sorted(authorized.glob("*.key"))
    if not files:
        raise FatalError(f"no authorized worker keys in {authorized} (create one with 'keys')")
    for f in files:
        load_key(f, "authorized worker key")
    return ServerKeys(public, secret, authorized, tuple(f.stem for f in files))  # type: ignore[arg-type]


def client_keys(endpoint: str, keys: Path | None) -> ClientKeys | None:
    """This worker's key pair and the compositor's public key (None: plain loopback link)."""
    if is_loopback(endpoint) and keys is None:
        return None
    if keys is None:
        raise FatalError(
            f"{endpoint} is not loopback, so the link is encrypted: pass --keys with the worker "
            "folder made by 'python -m inference keys' on the compositor's machine"
        )
    key_folder(keys)
    public, secret = load_key(keys / f"{WORKER}.key_secret", "this worker's secret key", True)
    server_public, _ = load_key(keys / f"{SERVER}.key", "the compositor's public key")
    return ClientKeys(public, secret, server_public, keys)  # type: ignore[arg-type]


def server(ctx: zmq.Context, sock: zmq.Socket, endpoint: str, keys: Path | None):
    """Make ``sock`` a CURVE server accepting only authorized workers.

    Required for non-loopback endpoints; used on loopback too when keys are given. Returns the
    running authenticator (stop it at exit), or None for a plain loopback socket.
    """
    if is_loopback(endpoint) and keys is None:
        return None
    if keys is None:
        raise FatalError(
            f"{endpoint} is reachable from the network, so it must be encrypted: create keys with "
            "'python -m inference keys KEYDIR --worker NAME' and pass --keys KEYDIR"
        )
    k = server_keys(keys)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(k.authorized))
    sock.curve_secretkey = k.secret
    sock.curve_publickey = k.public
    sock.curve_server = True
    return auth


def apply_client(sock: zmq.Socket, keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client with already checked keys (nothing for a plain link)."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public


def client(sock: zmq.Socket, endpoint: str, keys: Path | None) -> None:
    """Make ``sock`` a CURVE client of the compositor (required off loopback; used if given)."""
    apply_client(sock, client_keys(endpoint, keys))


@dataclass(frozen=True)
class LinkKey:
    """This run's key pair for the local TCP links: servers use it, clients need its public half."""

    public: bytes
    secret: bytes


def make_link_key(folder: Path) -> Path:
    """A new key pair for this run's local TCP links, in a new private ``folder``; returns it."""
    try:
        _private_dir(folder)
        _, secret = zmq.auth.create_certificates(folder, LINK)
        Path(secret).chmod(0o600)
    except OSError as exc:
        raise FatalError(f"cannot write the link key in {folder}: {exc.strerror or exc}") from None
    return folder


def link_key(folder: Path | None) -> LinkKey | None:
    """The run's link key from ``--link-keys`` (None: plain links), checked (one line if bad)."""
    if folder is None:
        return None
    key_folder(folder)
    public, secret = load_key(folder / f"{LINK}.key_secret", "the link key", True)
    return LinkKey(public, secret)  # type: ignore[arg-type]


def apply_link(sock: zmq.Socket, key: LinkKey | None, *, server: bool) -> None:
    """CurveZMQ on a local TCP link: the binding side is the server with the run's key; the
    connecting side a client with a fresh key pair of its own that knows the server's public key.
    Nothing for a plain link (``key`` None)."""
    if key is None:
        return
    if server:
        sock.curve_secretkey = key.secret
        sock.curve_publickey = key.public
        sock.curve_server = True
        return
    public, secret = zmq.curve_keypair()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = key.public


def _private_dir(path: Path) -> None:
    """Create ``path`` (and parents) readable by this user only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def make_keys(folder: Path, worker: str) -> Path:
    """Create (or reuse) the compositor's key pair and a new worker key pair; return the bundle."""
    if folder.exists():
        key_folder(folder, write=True)
        if (folder / f"{SERVER}.key_secret").exists():
            load_key(folder / f"{SERVER}.key_secret", "the compositor's secret key", True)
    try:
        return _make_keys(folder, worker)
    except OSError as exc:
        raise FatalError(f"cannot write keys in {folder}: {exc.strerror or exc}") from None


def _make_keys(folder: Path, worker: str) -> Path:
    _private_dir(folder)
    if not (folder / f"{SERVER}.key_secret").exists():
        zmq.auth.create_certificates(folder, SERVER)
    (folder / f"{SERVER}.key_secret").chmod(0o600)
    authorized = folder / "authorized"
    _private_dir(authorized)
    bundle = folder / f"worker-{worker}"
    if bundle.exists():
        raise FatalError(f"{bundle} exists already; pick another --worker name")
    _private_dir(bundle)
    pub, sec = zmq.auth.create_certificates(bundle, WORKER)
    Path(sec).chmod(0o600)
    shutil.copy(pub, authorized / f"{worker}.key")
    shutil.copy(folder / f"{SERVER}.key", bundle / f"{SERVER}.key")
    return bundle

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

"""

from __future__ import annotations

import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from common.errors import FatalError
from common.sockets import is_loopback

SERVER = "compositor"


def _load(path: Path, what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise FatalError(f"cannot read {what} {path}: {exc}") from None
    return public, secret


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
    public, secret = _load(keys / f"{SERVER}.key_secret", "the compositor's secret key")
    authorized = keys / "authorized"
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        raise FatalError(f"no authorized worker keys in {authorized} (create one with 'keys')")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(authorized))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def client(sock: zmq.Socket, endpoint: str, keys: Path | None) -> None:
    """Make ``sock`` a CURVE client of the compositor (required off loopback; used if given)."""
    if is_loopback(endpoint) and keys is None:
        return
    if keys is None:
        raise FatalError(
            f"{endpoint} is not loopback, so the link is encrypted: pass --keys with the worker "
            "folder made by 'python -m inference keys' on the compositor's machine"
        )
    public, secret = _load(keys / "worker.key_secret", "this worker's secret key")
    server_public, _ = _load(keys / f"{SERVER}.key", "the compositor's public key")
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


def make_keys(folder: Path, worker: str) -> Path:
    """Create (or reuse) the compositor's key pair and a new worker key pair; return the bundle."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / f"{SERVER}.key_secret").exists():
        zmq.auth.create_certificates(folder, SERVER)
    authorized = folder / "authorized"
    authorized.mkdir(exist_ok=True)
    bundle = folder / f"worker-{worker}"
    if bundle.exists():
        raise FatalError(f"{bundle} exists already; pick another --worker name")
    bundle.mkdir()
    pub, sec = zmq.auth.create_certificates(bundle, "worker")
    shutil.copy(pub, authorized / f"{worker}.key")
    shutil.copy(folder / f"{SERVER}.key", bundle / f"{SERVER}.key")
    Path(sec).chmod(0o600)
    (folder / f"{SERVER}.key_secret").chmod(0o600)
    return bundle

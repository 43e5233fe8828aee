"""Where the stages meet: the four links, computed in one place.

Why one module: every stage needs the same defaults and the launcher derives all four from one
setting; written in several places they drift apart.

Local links are private by default (``private``): Unix-domain (``ipc://``) sockets in a folder only
the user who started the pipeline can enter (mode 0700), so another local user can neither watch
the frames nor send key commands. TCP on loopback (``tcp``) is reachable by every local user and
stays available for systems without ipc and for links that must leave the machine.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import FatalError

DEFAULT_PORT_BASE = 5550
HOST = "tcp://127.0.0.1"
# A Unix socket path holds at most 107 bytes (sun_path is 108 with the terminating NUL).
IPC_PATH_MAX = 107
IPC_NAMES = ("f", "i", "o", "c")  # short on purpose: the whole path must fit in IPC_PATH_MAX


@dataclass(frozen=True)
class Endpoints:
    """capture -> compositor frames, workers <-> compositor, compositor -> display, display ->
    compositor control."""

    frames: str
    infer: str
    out: str
    control: str


def tcp(port_base: int = DEFAULT_PORT_BASE, host: str = HOST) -> Endpoints:
    """The four loopback TCP endpoints from a base port (base, base+1, base+2, base+3)."""
    return Endpoints(*(f"{host}:{port_base + i}" for i in range(4)))


def ipc_supported() -> bool:
    """ZeroMQ ipc:// needs Unix-domain sockets (Linux, macOS)."""
    return os.name == "posix"


def private(folder: Path) -> Endpoints:
    """The four links as ipc:// sockets inside ``folder`` (make it with ``private_folder``)."""
    paths = [Path(folder) / name for name in IPC_NAMES]
    longest = max(len(os.fsencode(p)) for p in paths)
    if longest > IPC_PATH_MAX:
        raise FatalError(
            f"runtime folder {folder} is too long for a Unix socket path ({longest} > "
            f"{IPC_PATH_MAX} bytes): set XDG_RUNTIME_DIR or TMPDIR to a shorter folder"
        )
    return Endpoints(*(f"ipc://{p}" for p in paths))


def runtime_base() -> Path:
    """$XDG_RUNTIME_DIR (per user, on tmpfs) when usable, else the temp folder."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return Path(xdg)
    return Path(tempfile.gettempdir())


@contextmanager
def private_folder(prefix: str = "pcam-") -> Iterator[Path]:
    """A new folder only its owner can enter (0700), removed with everything in it at exit."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=runtime_base()))
    except OSError as exc:
        raise FatalError(f"cannot create a private runtime folder: {exc}") from None
    try:
        folder.chmod(0o700)  # mkdtemp does this already; said explicitly because it is the point
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


DEFAULTS = tcp()


def is_loopback(endpoint: str) -> bool:
    """True for tcp://127.x, localhost, [::1], ipc, inproc: links that never leave the machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Socket helpers: every frame link keeps only the newest frame and every call has a timeout.

Frame links are PUSH/PULL with a high-water mark of one message on both sides. In real-time mode the
sender never waits (``try_send``: if the peer is behind, the frame is dropped and counted), and the
receiver drains whatever is queued and keeps only the newest (``recv_newest``). So a slow consumer
can never build a queue and latency stays bounded. In lock-step mode (offline processing) the sender
waits instead (``send_blocking``), which turns the same sockets into lossless back-pressure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from common import protocol, security
from common.endpoints import is_loopback

log = logging.getLogger(__name__)

# Largest message any socket accepts: a 4K BGR frame plus headroom. Bigger input from a peer is a
# bug or an attack, and zmq drops that peer's connection instead of allocating the memory.
MAX_MESSAGE_BYTES = 3840 * 2160 * 3 + 65536

# How often a connecting socket retries a peer that is not there yet. The stages start together
# but bind at different moments (the compositor binds after ~1 s of imports and warm-up), and until
# a worker's retry lands the picture is hidden waiting for the first mask: ZeroMQ's default of
# 100 ms cost 0-5 frames at every start and after every compositor restart (measured 23-139 ms
# from the compositor's bind to the worker joining). On this machine a retry is one failed
# connect() system call, so a 10 ms interval costs nothing. A remote peer keeps ZeroMQ's 100 ms:
# no reason to send it a hundred connection attempts a second.
LOCAL_RECONNECT_MS = 10
REMOTE_RECONNECT_MS = 100


def set_reconnect(sock: zmq.Socket, endpoint: str) -> None:
    """Set ``sock``'s retry interval for ``endpoint`` (before ``connect``)."""
    local = is_loopback(endpoint)
    sock.setsockopt(zmq.RECONNECT_IVL, LOCAL_RECONNECT_MS if local else REMOTE_RECONNECT_MS)


def make_socket(
    ctx: zmq.Context,
    kind: int,
    *,
    bind: str | None = None,
    connect: str | None = None,
    hwm: int = 1,
    link: security.LinkKey | None = None,
) -> zmq.Socket:
    """A socket with the project's defaults: small queues, no linger, bounded message size.

    ``link``: this run's key for local TCP links (``security.apply_link``): the binding side is
    the CurveZMQ server, the connecting side a client."""
    sock = ctx.socket(kind)
    security.apply_link(sock, link, server=bool(bind))
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    if kind == zmq.PUSH:
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue frames for a peer that is not there yet
    # A send that cannot complete in a second means the peer is gone: callers treat it so.
    sock.setsockopt(zmq.SNDTIMEO, 1000)
    if bind:
        try:
            sock.bind(bind)
        except zmq.ZMQError as exc:
            sock.close(0)
            from common.errors import FatalError

            raise FatalError(
                f"cannot listen on {bind}: {exc.strerror} (another pipeline running? "
                "choose other ports with --port-base)"
            ) from None
    if connect:
        set_reconnect(sock, connect)
        sock.connect(connect)
    return sock


def try_send(sock: zmq.Socket, parts: list[Any], copy: bool = False) -> bool:
    """Send without waiting; False if the peer is behind or absent (the caller counts a drop).

    ``copy``: False sends the caller's buffers zero-copy (they must not change until sent);
    True for buffers the caller reuses (a queued message would otherwise change under it).
    """
    try:
        sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=copy)
        return True
    except zmq.Again:
        return False


def send_blocking(
    sock: zmq.Socket,
    parts: list[Any],
    stopping: Callable[[], bool],
    step_ms: int = 100,
    copy: bool = False,
) -> bool:
    """Wait until the peer takes the message (lock-step back-pressure); False if asked to stop.
    ``copy``: as ``try_send``."""
    while not stopping():
        if sock.poll(step_ms, zmq.POLLOUT):
            try:
                sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=copy)
                return True
            except zmq.Again:
                continue
    return False


def recv_parts(sock: zmq.Socket) -> list[Any] | None:
    """One multipart message without waiting, or None if nothing is queued."""
    try:
        return sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None


def drain(sock: zmq.Socket, limit: int = 1000) -> list[list[Any]]:
    """Everything queued right now, oldest first (bounded, so a flood cannot starve the loop)."""
    out: list[list[Any]] = []
    while len(out) < limit:
        parts = recv_parts(sock)
        if parts is None:
            break
        out.append(parts)
    return out


class BadMessages:
    """Counts dropped messages and warns about them without flooding the log (first, then 1/s)."""

    def __init__(self) -> None:
        self.count = 0
        self._warned_at = 0.0

    def __call__(self, reason: str, now: float) -> None:
        self.count += 1
        if self.count == 1 or now - self._warned_at >= 1.0:
            self._warned_at = now
            log.warning("dropped a bad message (%s); %d so far", reason, self.count)


def decode_or_count(
    parts: list[Any],
    bad: BadMessages,
    now: float,
    expect: tuple[type, ...] | None = None,
) -> protocol.Message | None:
    """Decode a message, or count and log it as bad and return None: stages never crash on input.

    ``expect``: the message classes this link carries (anything else is bad input too).
    """
    try:
        return protocol.decode(parts, expect)
    except protocol.ProtocolError as exc:
        bad(str(exc), now)
        return None


@dataclass
class Newest:
    """What ``recv_newest`` found: the newest message of the kept kind, and what else came."""

    message: Any = None  # the newest message of the kind kept, or None
    older: int = 0  # older messages of that kind, replaced by a newer one (count them as drops)
    others: list[Any] = field(default_factory=list)  # other expected kinds (e.g. End), in order


def recv_newest(
    sock: zmq.Socket,
    bad: BadMessages,
    keep: type,
    also: tuple[type, ...] = (),
    limit: int = 1000,
) -> Newest:
    """Drain ``sock`` without waiting and keep only the newest ``keep`` message.

    The one "keep only the newest" loop of every frame link: a consumer that fell behind shows the
    newest picture instead of catching up through a queue. Messages of the ``also`` kinds are
    returned in order; anything else is dropped and counted as bad.
    """
    return keep_newest(drain(sock, limit), bad, keep, also)


def keep_newest(
    batch: list[list[Any]], bad: BadMessages, keep: type, also: tuple[type, ...] = ()
) -> Newest:
    """``recv_newest`` on messages already received (a worker drains its socket itself)."""
    out = Newest()
    expect = (keep, *also)
    for parts in batch:
        msg = decode_or_count(parts, bad, time.time(), expect)
        if msg is None:
            continue
        if isinstance(msg, keep):
            out.older += out.message is not None
            out.message = msg
        else:
            out.others.append(msg)
    return out

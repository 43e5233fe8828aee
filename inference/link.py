"""The worker's end of the compositor link: one DEALER socket, reopened when the compositor is lost.

It also watches the socket's handshake (ZeroMQ socket monitor), because a worker whose key the
compositor refuses otherwise sees nothing but silence and reconnects forever ("compositor silent
for 5.0 s") while the compositor hides every frame. A refused key (``HANDSHAKE_FAILED_AUTH``) is a
``FatalError`` saying what to copy where; repeated failed handshakes (wrong compositor key, or
encrypted on one side only) too. A host name that does not resolve is refused at start (a typo is
the usual cause and the user is there to see it); if it stops resolving later (network gone), the
worker keeps retrying and says so once a minute, since it worked before.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from common import security, sockets
from common.errors import FatalError

HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
MONITORED = HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED
FAILED_HANDSHAKES_FATAL = 3  # in a row, without one success: not a glitch but wrong keys


def resolves(endpoint: str) -> bool:
    """True if the endpoint's host is an address or a name that resolves (ipc: always)."""
    if not endpoint.startswith("tcp://"):
        return True
    parts = urllib.parse.urlsplit(endpoint)
    try:
        socket.getaddrinfo(parts.hostname or "", parts.port or 0, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        return False
    return True


def check_resolves(endpoint: str) -> None:
    if not resolves(endpoint):
        host = urllib.parse.urlsplit(endpoint).hostname
        raise FatalError(
            f"--connect {endpoint}: host {host!r} does not resolve (typo? give the compositor's "
            "address or a name this machine can look up)"
        )


def refused_message(endpoint: str, keys: security.ClientKeys | None, name: str) -> str:
    folder = keys.folder if keys else "KEYS"
    return (
        f"the compositor at {endpoint} refused this worker's key: copy {folder}/worker.key "
        f"into the compositor's key folder as authorized/{name}.key and restart the compositor"
    )


def mismatch_message(endpoint: str, keys: security.ClientKeys | None) -> str:
    if keys is None:
        return (
            f"the encrypted handshake with {endpoint} failed: that compositor uses keys, so pass "
            "--keys with this worker's folder from 'python -m inference keys'"
        )
    return (
        f"the encrypted handshake with {endpoint} failed {FAILED_HANDSHAKES_FATAL} times: "
        f"{keys.folder}/compositor.key is not that compositor's public key (copy it again from "
        "its key folder), or the compositor runs without --keys"
    )


RECEIVE_QUEUE = 4  # frames (see Link.open)


class Link:
    """DEALER to the compositor with the project's socket defaults and a handshake monitor."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        keys: security.ClientKeys | None,
        name: str,
        link: security.LinkKey | None = None,
    ) -> None:
        self.ctx, self.endpoint, self.keys, self.name = ctx, endpoint, keys, name
        self.link = None if keys is not None else link  # the worker's own keys come first
        self.log = logging.getLogger("inference")
        self.sock: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.failed_handshakes = 0
        self._unresolved_warned = -float("inf")

    def open(self) -> None:
        # Room for a few frames in the receive queue: frames that queued up (a READY crossing a
        # hand-out) must be visible at once to be skipped; with room for one they arrive one by
        # one and the worker could never tell it is behind. Bounded: a few frames' memory.
        sock = sockets.make_socket(self.ctx, zmq.DEALER, hwm=RECEIVE_QUEUE, link=self.link)
        security.apply_client(sock, self.keys)
        self.monitor = sock.get_monitor_socket(MONITORED)
        sockets.set_reconnect(sock, self.endpoint)
        sock.connect(self.endpoint)
        self.sock = sock
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.disable_monitor()
            self.sock.close(0)
        if self.monitor is not None:
            self.monitor.close(0)
        self.sock = self.monitor = None

    def reopen(self, now: float) -> None:
        """Lazy Pirate: a fresh socket (the old one may hold a dead connection)."""
        self.close()
        if not resolves(self.endpoint) and now - self._unresolved_warned >= 60.0:
            self._unresolved_warned = now
            self.log.warning("%s does not resolve (network down?); retrying", self.endpoint)
        self.open()

    def send(self, parts: list[Any]) -> bool:
        """Send, or False if the compositor has not taken it within the socket's send timeout."""
        assert self.sock is not None
        try:
            self.sock.send_multipart(parts, copy=False)
            return True
        except zmq.Again:
            return False

    def recv(self, timeout_s: float) -> list[list[Any]]:
        """Everything queued once something arrives within ``timeout_s`` (empty: nothing came).

        All of it, so the worker can answer only the newest frame (see ``worker.newest``).
        Raises ``FatalError`` on a refused key.
        """
        assert self.sock is not None
        ready = dict(self.poller.poll(int(timeout_s * 1000)))
        if self.monitor in ready:
            self.check_handshakes()
        return sockets.drain(self.sock, limit=100) if self.sock in ready else []

    def check_handshakes(self) -> None:
        assert self.monitor is not None
        for parts in sockets.drain(self.monitor, limit=100):
            event = parse_monitor_message([p.bytes for p in parts])["event"]
            self.on_event(event)

    def on_event(self, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.failed_handshakes = 0
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise FatalError(refused_message(self.endpoint, self.keys, self.name))
        elif event & HANDSHAKE_FAILED:
            self.failed_handshakes += 1
            if self.failed_handshakes >= FAILED_HANDSHAKES_FATAL:
                raise FatalError(mismatch_message(self.endpoint, self.keys))

"""Bookkeeping of inference workers on the compositor's ROUTER socket (load-balancing pattern).

A worker is idle after it says READY or returns a mask, busy from when it is handed a frame. Each
worker holds at most one frame. Idle workers quiet for a second get a heartbeat and answer it, so
a worker that vanished is noticed (``liveness``); a busy worker that has not answered within
``timeout`` seconds loses its slot (the pipeline goes on; the fail-closed rule covers the picture).
A worker that comes back (same or new socket) simply says READY again and gets a new slot.

No clock of its own: every call gets ``now`` (monotonic seconds). What each worker holds and
which masks are genuine is ``dispatch.Dispatcher``'s business.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Slot:
    name: str
    busy_frame: int | None = None
    busy_since: float = 0.0
    last_seen: float = 0.0
    pinged: float = float("-inf")  # last heartbeat sent


class WorkerPool:
    """Which workers exist, which are idle (least recently used first), which timed out."""

    def __init__(self, timeout: float, liveness: float = 3.0) -> None:
        self.timeout = timeout
        self.liveness = liveness
        self.slots: dict[bytes, Slot] = {}
        self.idle: OrderedDict[bytes, None] = OrderedDict()
        self.timeouts = 0

    def ready(self, identity: bytes, name: str, now: float) -> bool:
        """The worker is idle (READY or a returned mask). True if it is new to us."""
        slot = self.slots.get(identity)
        new = slot is None
        if slot is None:
            slot = self.slots[identity] = Slot(name)
        slot.name = name or slot.name
        slot.busy_frame = None
        slot.last_seen = now
        self.idle[identity] = None
        return new

    def take_idle(self) -> bytes | None:
        """The idle worker that has waited longest, now marked as about to get work."""
        if not self.idle:
            return None
        identity, _ = self.idle.popitem(last=False)
        return identity

    def assign(self, identity: bytes, frame_id: int, now: float) -> None:
        slot = self.slots[identity]
        slot.busy_frame = frame_id
        slot.busy_since = now
        self.idle.pop(identity, None)

    def expire(self, now: float) -> list[Slot]:
        """Drop busy workers past ``timeout`` and idle ones silent past ``liveness``."""
        gone = []
        for identity, slot in list(self.slots.items()):
            busy_late = slot.busy_frame is not None and now - slot.busy_since > self.timeout
            idle_silent = slot.busy_frame is None and now - slot.last_seen > self.liveness
            if busy_late or idle_silent:
                gone.append(slot)
                del self.slots[identity]
                self.idle.pop(identity, None)
                self.timeouts += 1
        return gone

    def lost(self, identity: bytes) -> Slot | None:
        """A worker found gone (a send to it failed): drop its slot, count it as a timeout."""
        slot = self.slots.pop(identity, None)
        self.idle.pop(identity, None)
        if slot is not None:
            self.timeouts += 1
        return slot

    def busy_with(self, frame_id: int) -> bool:
        return any(s.busy_frame == frame_id for s in self.slots.values())

    def __len__(self) -> int:
        return len(self.slots)

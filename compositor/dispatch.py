"""Hand-outs: which idle worker gets the newest frame, when, and which returned masks are genuine.

Pure bookkeeping, no sockets and no clock of its own: every call gets ``now`` (monotonic seconds).

* The worker pool (``WorkerPool``) says who is idle, busy or gone.
* The in-flight table records every hand-out: which worker (the ROUTER identity, which a peer
  cannot choose for another connection) got which frame, when. A mask is genuine only if it comes
  from that identity, for that ``frame_id`` and stream; the frame's capture time and picture are
  then taken from this record, never from the worker. A worker may briefly hold two frames (its
  READY answering a heartbeat crosses a hand-out, so it gets the next frame too; a resting worker
  declines frames): each is recorded, and a worker answers in order, so its mask for a frame
  settles the records of the frames it was handed before that one as well. The table is bounded:
  at most ``PER_WORKER`` records per worker and ``max_in_flight`` in all (at most that many
  workers busy at once); surplus records (not a worker's newest) go first, then records of
  workers that timed out (kept so their late but genuine mask is still usable), then the oldest.
* Pacing: with several workers, hand-outs are spaced by the round trip (see ``paced``).
* Heartbeats: an idle worker is due one once it has been quiet for ``HEARTBEAT_S``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from common import protocol
from compositor.workers import Slot, WorkerPool

HEARTBEAT_S = 1.0
PER_WORKER = 3  # records per worker (see the module docstring: normally one, briefly two)
# Spacing of hand-outs as a share of the even share of the round trip (see ``paced``).
PACE_SHARE = 0.7
# Weight of the newest round trip in its moving average.
ROUND_TRIP_WEIGHT = 0.2

# Why a mask is not genuine (the compositor counts rejected masks by these reasons).
NOT_HANDED_OUT = "not_handed_out"  # no frame with this id is out (never was, or forgotten)
WRONG_WORKER = "wrong_worker"  # the frame is out, but with another worker
WRONG_STREAM = "wrong_stream"  # the worker holds this frame_id, of another stream


@dataclass(frozen=True)
class InFlight:
    """A frame handed to a worker: the compositor's own record of it."""

    identity: bytes
    frame: protocol.Frame  # as received from capture (its image: a read-only zmq buffer view)
    sent_at: float


class Dispatcher:
    """Worker pool + in-flight table + pacing + heartbeat schedule. See the module docstring."""

    def __init__(self, pool: WorkerPool, max_in_flight: int = 8) -> None:
        self.pool = pool
        self.max_in_flight = max_in_flight
        # (identity, frame_id) -> record, oldest hand-out first
        self.in_flight: OrderedDict[tuple[bytes, int], InFlight] = OrderedDict()
        self.round_trip_s = 0.0  # moving average of hand-out -> genuine mask
        self.last_dispatch = float("-inf")

    # --- workers ---------------------------------------------------------------------------
    def ready(self, identity: bytes, name: str, now: float) -> bool:
        """The worker said READY or returned a mask: it is idle. True if it is new to us."""
        return self.pool.ready(identity, name, now)

    def expire(self, now: float) -> list[Slot]:
        """Workers silent too long lose their slot (their in-flight record stays, as late)."""
        return self.pool.expire(now)

    def lost(self, identity: bytes) -> Slot | None:
        """A send to the worker failed: it is gone, and so is what it held."""
        for key in [k for k in self.in_flight if k[0] == identity]:
            del self.in_flight[key]
        return self.pool.lost(identity)

    def heartbeats_due(self, now: float) -> list[bytes]:
        """The idle workers to send a heartbeat now: those not heard from, nor sent a heartbeat,
        for ``HEARTBEAT_S``.

        Not one that just answered: it is known alive, and a heartbeat it answers with READY
        just as it is handed the next frame gives it a second frame (a backlog, see
        ``inference.worker``).
        """
        due = []
        for identity in self.pool.idle:
            slot = self.pool.slots[identity]
            if now - max(slot.last_seen, slot.pinged) >= HEARTBEAT_S:
                slot.pinged = now
                due.append(identity)
        return due

    # --- hand-outs -------------------------------------------------------------------------
    def paced(self, now: float) -> bool:
        """True if handing out another frame now would bunch the workers up.

        With several workers, frames handed out close together come back as masks close
        together, in whatever order the workers' jitter gives: the older one arrives last and is
        discarded (newest wins), wasting a whole forward pass. Spacing hand-outs by the round
        trip divided by the number of workers makes masks arrive evenly spaced and in order, so
        N workers really give more masks. The spacing is 0.7 of the even share so that jitter
        does not keep a worker idle (measured with two stand-in workers: stale masks 37 % -> ~20 %,
        applied mask rate 1.9/s -> 2.4-2.8/s, one worker 2.0/s).
        """
        n = len(self.pool)
        return n > 1 and now - self.last_dispatch < PACE_SHARE * self.round_trip_s / n

    def busy(self) -> int:
        """Workers working on a frame now."""
        return sum(1 for slot in self.pool.slots.values() if slot.busy_frame is not None)

    def next_worker(self, now: float, *, pace: bool = True) -> bytes | None:
        """The idle worker to hand the next frame to now, or None (none idle, paced, or full).

        The caller then either sends and calls ``handed`` or calls ``lost``.
        """
        if (pace and self.paced(now)) or self.busy() >= self.max_in_flight:
            return None
        return self.pool.take_idle()

    def handed(self, identity: bytes, frame: protocol.Frame, now: float) -> None:
        """``frame`` was sent to ``identity``: record it (bounded, see the module docstring)."""
        self.pool.assign(identity, frame.frame_id, now)
        key = (identity, frame.frame_id)
        self.in_flight.pop(key, None)  # lock-step: the same frame again goes to the end
        self.in_flight[key] = InFlight(identity, frame, now)
        self.last_dispatch = now
        mine = [k for k in self.in_flight if k[0] == identity]
        for k in mine[:-PER_WORKER]:
            del self.in_flight[k]
        while len(self.in_flight) > self.max_in_flight:
            del self.in_flight[self._evictable()]

    def _evictable(self) -> tuple[bytes, int]:
        """The record to forget first: a surplus one, else a late one, else the oldest."""
        newest = {k[0]: k for k in self.in_flight}  # each worker's newest record
        keys = list(self.in_flight)
        surplus = [k for k in keys if newest[k[0]] != k]
        late = [k for k in keys if not self._holds(k)]
        return (surplus or late or keys)[0]

    def holds(self, frame_id: int) -> bool:
        """True while a live worker works on ``frame_id`` (lock-step re-hands it out otherwise)."""
        return self.pool.busy_with(frame_id)

    # --- masks -----------------------------------------------------------------------------
    def lookup(self, identity: bytes, frame_id: int, stream: int) -> tuple[InFlight | None, str]:
        """Is a mask from ``identity`` for (``frame_id``, ``stream``) genuine?

        Genuine: (the record of the frame it was handed, ""); otherwise (None, the reason).
        Changes nothing: a forged mask cannot disturb the record the real worker will answer.
        """
        rec = self.in_flight.get((identity, frame_id))
        if rec is not None:
            return (rec, "") if rec.frame.stream == stream else (None, WRONG_STREAM)
        if any(k[1] == frame_id for k in self.in_flight):
            return None, WRONG_WORKER
        return None, NOT_HANDED_OUT

    def settle(self, rec: InFlight, now: float) -> None:
        """A genuine mask for ``rec`` was taken: the round trip is measured, and the record goes
        with the worker's older ones (it answers in order: those will never be answered)."""
        for key in list(self.in_flight):
            if key[0] == rec.identity:
                done = key[1] == rec.frame.frame_id
                del self.in_flight[key]
                if done:
                    break
        rtt = max(0.0, now - rec.sent_at)
        w = ROUND_TRIP_WEIGHT
        self.round_trip_s = rtt if not self.round_trip_s else (1 - w) * self.round_trip_s + w * rtt

    def claim(
        self, identity: bytes, frame_id: int, stream: int, now: float
    ) -> tuple[InFlight | None, str]:
        """``lookup``, then ``settle`` if genuine."""
        rec, reason = self.lookup(identity, frame_id, stream)
        if rec is not None:
            self.settle(rec, now)
        return rec, reason

    def _holds(self, key: tuple[bytes, int]) -> bool:
        slot = self.pool.slots.get(key[0])
        return slot is not None and slot.busy_frame == key[1]

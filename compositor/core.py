"""What the compositor does with each message, without sockets: the loop (``loop.py``) moves
messages between the sockets and this object.

* READY: the worker is idle.
* MASK: accepted only if genuine (``Dispatcher.claim``: from the worker the frame was handed to,
  for that frame and stream), of a plausible size for that frame (``protocol.mask_problem``) and
  newer than the applied one (``MaskSlot.newer``). Everything else is dropped and counted, by
  reason (``masks_rejected_by_reason``); a malformed message never gets this far (``bad_messages``).
* CONTROL: privacy toggle/on/off, logged when it changes. VIEW: the display's window wants the
  applied alpha with every picture (its mask view, ``m``) or no longer.
* peers refused at the handshake: counted, logged rate-limited.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from common import protocol, sockets
from common.stats import Stats
from compositor.control import PrivacySwitch
from compositor.dispatch import Dispatcher, InFlight
from compositor.picture import Picture

REFUSED_LOG_S = 5.0
RATE_WINDOW_S = 5.0
# Distinct worker names counted in ``masks_by_worker``; masks from any further name count under
# ``OTHER_WORKERS``. A worker names itself in every mask, so one that changes its name per mask
# (a bug, or a peer that has the key) would otherwise grow the table, the stats file and the
# status line without bound. A real deployment has a handful of workers.
MAX_WORKER_NAMES = 32
OTHER_WORKERS = "(others)"
# Counters present in the stats from the start (0 until something happens), so readers of the
# stats file (launch.py, tests) never miss a key.
COUNTERS = (
    "frames_received",
    "frames_composited",
    "frames_dropped",
    "fail_closed_frames",
    "frames_to_workers",
    "masks_received",
    "masks_applied",
    "masks_stale",
    "masks_rejected",
    "peers_refused",
)


class Core:
    """Dispatcher + picture + privacy + stats. See the module docstring."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        picture: Picture,
        stats: Stats,
        log: logging.Logger,
        *,
        privacy: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.picture = picture
        self.stats = stats
        self.log = log
        self.clock = clock
        self.privacy = PrivacySwitch(privacy)
        self.bad = sockets.BadMessages()
        self.masks_by_worker: dict[str, int] = {}
        self.rejected: dict[str, int] = {}  # masks rejected, by reason
        self.hidden: dict[str, int] = {}  # frames hidden, by reason (Output.hidden)
        self.last_refused_log = float("-inf")
        self.mask_view = False  # the display asked for the alpha with every picture
        self.applied_at: deque[float] = deque()  # when masks were applied, the last RATE_WINDOW_S
        self.started = clock()
        for name in COUNTERS:
            stats.counts[name] += 0
        stats.live = self.live_stats

    # --- workers ---------------------------------------------------------------------------
    def on_ready(self, identity: bytes, msg: protocol.Ready) -> None:
        if self.dispatcher.ready(identity, msg.worker, self.clock()):
            self.log.info("worker %s joined (%d now)", msg.worker, len(self.dispatcher.pool))

    def on_mask(self, identity: bytes, msg: protocol.Mask, nbytes: int) -> InFlight | None:
        """The record of the frame a mask belongs to if the mask is genuine and well-formed.

        The caller decides whether it is used (newest wins; lock-step: the current frame).
        """
        now = self.clock()
        self.stats.count("masks_received")
        self.stats.sample("infer_ms", msg.infer_ms)
        self.stats.count("mask_bytes", nbytes)
        rec, reason = self.dispatcher.lookup(identity, msg.frame_id, msg.stream)
        if rec is not None:
            reason = protocol.mask_problem(msg.image.shape, rec.frame.image.shape)
        if self.dispatcher.ready(identity, msg.worker, now):  # a mask also means "idle now"
            self.log.info("worker %s (re)joined with a mask", msg.worker)
        if reason or rec is None:
            self.reject(reason)
            return None
        self.dispatcher.settle(rec, now)
        return rec

    def apply(self, rec: InFlight, msg: protocol.Mask, identity: bytes) -> bool:
        """Apply a genuine mask if it is newer than the applied one (newest frame_id wins)."""
        f = rec.frame
        if not self.picture.slot.newer(f.stream, f.frame_id):
            self.stats.count("masks_stale")
            return False
        self.picture.apply_mask(rec, msg.image)
        self.applied_at.append(self.clock())
        count_bounded(self.masks_by_worker, self._name(identity, msg), MAX_WORKER_NAMES)
        self.stats.count("masks_applied")
        return True

    def mask_rate(self) -> float:
        """Masks applied per second over the last ``RATE_WINDOW_S`` (the window's overlay: what
        the user sees now, not the run's average; 0 once masks stopped)."""
        now = self.clock()
        while self.applied_at and now - self.applied_at[0] > RATE_WINDOW_S:
            self.applied_at.popleft()
        return len(self.applied_at) / max(min(RATE_WINDOW_S, now - self.started), 1.0)

    def reject(self, reason: str) -> None:
        self.stats.count("masks_rejected")
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        n = self.stats.counts["masks_rejected"]
        if n == 1 or n % 100 == 0:
            self.log.warning("rejected a mask (%s); %d so far", reason, n)

    def handed(self, identity: bytes, frame: protocol.Frame, nbytes: int) -> None:
        self.dispatcher.handed(identity, frame, self.clock())
        self.stats.count("frame_bytes_to_workers", nbytes)
        self.stats.count("frames_to_workers")

    def worker_lost(self, identity: bytes) -> None:
        slot = self.dispatcher.lost(identity)
        if slot is not None:
            self.log.warning("worker %s is gone, slot dropped (pipeline goes on)", slot.name)

    def expire_workers(self) -> None:
        for slot in self.dispatcher.expire(self.clock()):
            self.log.warning("worker %s silent, slot dropped (pipeline goes on)", slot.name)

    def _name(self, identity: bytes, msg: protocol.Mask) -> str:
        slot = self.dispatcher.pool.slots.get(identity)
        return msg.worker or (slot.name if slot is not None else "") or "?"

    # --- display and network ---------------------------------------------------------------
    def shown(self, out: protocol.Output) -> None:
        """``out`` went to the display: count it, and why it was hidden if it was."""
        self.stats.count("frames_composited")
        self.stats.count("fail_closed_frames", int(out.fail_closed))
        if out.hidden:
            self.hidden[out.hidden] = self.hidden.get(out.hidden, 0) + 1

    def on_control(self, msg: protocol.Control | protocol.View) -> None:
        if isinstance(msg, protocol.View):
            if msg.mask != self.mask_view:
                self.log.info("mask view %s (the display's window)", "on" if msg.mask else "off")
            self.mask_view = msg.mask
            return
        self.privacy.apply(msg.privacy)

    def report_privacy(self, final: bool = False) -> None:
        """Log privacy changes (rate-limited: see ``control.PrivacySwitch``; all at ``final``)."""
        line = self.privacy.report(float("inf") if final else self.clock())
        if line is not None:
            self.log.info("%s", line)

    def refused(self, endpoint: str) -> None:
        """Count a peer refused at the handshake (bad key, no key, garbage); log it rate-limited."""
        self.stats.count("peers_refused")
        n = self.stats.counts["peers_refused"]
        now = self.clock()
        if n == 1 or now - self.last_refused_log >= REFUSED_LOG_S:
            self.last_refused_log = now
            self.log.warning(
                "refused a connection on %s: unknown or wrong key, or not our protocol "
                "(%d refused so far)",
                endpoint,
                n,
            )

    # --- stats -----------------------------------------------------------------------------
    def status(self) -> str:
        s = self.stats
        age = s.series.get("mask_age_ms")
        return (
            f"{s.recent_rate('frames_composited'):.1f} fps out, "
            f"{s.recent_rate('masks_applied'):.2f} masks/s, "
            f"mask age {age[-1] if age else float('nan'):.0f} ms, "
            f"workers {len(self.dispatcher.pool)}, "
            f"dropped {s.counts['frames_dropped']}, fail-closed {s.counts['fail_closed_frames']}, "
            f"rejected {s.counts['masks_rejected']}, "
            f"privacy {'on' if self.privacy.on else 'off'}"
        )

    def live_stats(self) -> dict[str, Any]:
        """The compositor's derived stats, computed whenever the stats file is written."""
        s = self.stats
        return dict(
            inference_fps=round(s.rate("masks_applied"), 3),
            masks_received_fps=round(s.rate("masks_received"), 3),
            masks_by_worker=dict(self.masks_by_worker),
            masks_rejected_by_reason=dict(self.rejected),
            fail_closed_by_reason=dict(self.hidden),
            worker_timeouts=self.dispatcher.pool.timeouts,
            bad_messages=self.bad.count,
            bytes_per_frame_to_workers=_per(
                s.counts["frame_bytes_to_workers"], s.counts["frames_to_workers"]
            ),
            bytes_per_mask=_per(s.counts["mask_bytes"], s.counts["masks_received"]),
            in_flight=len(self.dispatcher.in_flight),
            privacy=self.privacy.on,
        )


def _per(total: int, n: int) -> float | None:
    return round(total / n, 1) if n else None


def count_bounded(counts: dict[str, int], name: str, limit: int) -> None:
    """``counts[name] += 1``, with at most ``limit`` names of their own: once the table is full,
    a new name counts under ``OTHER_WORKERS``, so a peer that invents names cannot grow it."""
    if name not in counts and len(counts) >= limit:
        name = OTHER_WORKERS
    counts[name] = counts.get(name, 0) + 1

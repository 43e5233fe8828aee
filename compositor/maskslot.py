"""The applied mask: which frame it belongs to, whether a new one replaces it, and whether a frame
may be shown with it. The hide-or-show rule lives here and nowhere else.

Pure: no sockets, no clock. A mask's age is the capture time of the frame being shown minus the
capture time of the frame the mask was computed on, both stamped by capture; the latter comes from
the compositor's own record of the frame it handed out, never from the worker.

Verdict for a frame, in privacy mode (``Output.hidden``):

* ``"waiting"``: no mask accepted yet;
* ``"mismatch"``: the mask belongs to another stream (a restarted capture) or to a frame of
  another aspect (another camera mode);
* ``"stale"``: the mask is older than the limit (never in lock-step, where every frame waits for
  its own mask): ``max_age``, or, where masks normally get older than that on this machine,
  ``STALL_FACTOR`` times the age they normally reach (``Cadence``);
* ``""``: shown with the mask.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

# The mask contract's aspect check (compose.render uses the same one).
from common.protocol import same_aspect

WAITING, STALE, MISMATCH = "waiting", "stale", "mismatch"

# The age limit is a stall detector: a worker that stopped delivering. On a machine where the model
# is slower than ``max_age`` allows for (measured: the Mask R-CNN stand-in at 4.6 s per mask in the
# pipeline, masks then 4.6-9.2 s old; with the fixed 6 s limit 717 of 1045 frames were hidden with
# the worker working normally), the limit follows the age masks normally reach, times this factor.
STALL_FACTOR = 1.5
CADENCE_SAMPLES = 9  # median of the last peaks: one late mask (a stall) does not move it
PEAK_CAP_S = 30.0  # however slow a worker is, a mask older than 1.5 x this is never trusted


@dataclass(frozen=True)
class Applied:
    """Where the applied mask comes from (the compositor's record of the frame it was made on)."""

    stream: int
    frame_id: int
    ts: float  # capture time of that frame (seconds, capture's clock)
    shape: tuple[int, int]  # (h, w) of that frame


@dataclass(frozen=True)
class Verdict:
    """Whether a frame may be shown with the applied mask, and why not."""

    show: bool
    hidden: str  # "" (shown), "waiting", "stale" or "mismatch"
    age_s: float | None  # mask age for this frame (None: no mask, or another stream's)


class Cadence:
    """How old the applied mask normally gets before the next one replaces it (capture clock).

    A sample per replacement: the age the replaced mask had reached (the newest frame's capture
    time minus its frame's). The first mask, with nothing replaced yet, gives twice its arrival
    age (one busy worker: the next mask comes one forward pass later). Median of the last
    ``CADENCE_SAMPLES``, capped at ``PEAK_CAP_S``.
    """

    def __init__(self) -> None:
        self.peaks: deque[float] = deque(maxlen=CADENCE_SAMPLES)

    def replaced(self, old_ts: float | None, new_ts: float, now_ts: float | None) -> None:
        if now_ts is None:
            return
        if old_ts is None:
            self.peaks.append(2 * max(0.0, now_ts - new_ts))
        else:
            self.peaks.append(max(0.0, now_ts - old_ts))

    def usual_peak(self) -> float:
        return min(statistics.median(self.peaks), PEAK_CAP_S) if self.peaks else 0.0


class MaskSlot:
    """The newest mask wins (per stream); the verdict for every frame. See the module docstring."""

    def __init__(self, max_age: float, lockstep: bool = False) -> None:
        self.max_age = max_age
        self.lockstep = lockstep
        self.applied: Applied | None = None
        self.stream: int | None = None  # the stream of the newest frame seen
        self.newest_ts: float | None = None  # its capture time
        self.cadence = Cadence()

    def see_frame(self, stream: int, ts: float | None = None) -> None:
        """A frame of ``stream`` (captured at ``ts``) arrived: masks of any other stream can no
        longer win."""
        self.stream = stream
        self.newest_ts = ts if ts is not None else self.newest_ts

    def limit(self) -> float:
        """The age above which a mask is stale: ``max_age``, or more where masks normally get
        older than that (see ``STALL_FACTOR``)."""
        return max(self.max_age, STALL_FACTOR * self.cadence.usual_peak())

    def newer(self, stream: int, frame_id: int) -> bool:
        """Would a mask for (``stream``, ``frame_id``) replace the applied one?

        Newest ``frame_id`` wins within a stream, so a slow worker never rolls the picture back.
        A mask of another stream wins only if that is the stream now coming in (a restarted
        capture), so a late mask of an old stream cannot replace one of the current stream.
        """
        a = self.applied
        if a is None:
            return self.stream is None or stream == self.stream
        if stream == a.stream:
            return frame_id > a.frame_id
        return self.stream is None or stream == self.stream

    def accept(self, stream: int, frame_id: int, ts: float, shape: tuple[int, int]) -> None:
        old = self.applied
        if old is not None and old.stream != stream:
            self.cadence = Cadence()  # another capture run: its own cadence
            old = None
        self.cadence.replaced(old.ts if old is not None else None, ts, self.newest_ts)
        self.applied = Applied(stream, frame_id, ts, (int(shape[0]), int(shape[1])))

    def verdict(self, stream: int, ts: float, shape: tuple[int, int]) -> Verdict:
        """May a frame (of ``stream``, captured at ``ts``, size ``shape``) be shown?"""
        a = self.applied
        if a is None:
            return Verdict(False, WAITING, None)
        if a.stream != stream:
            return Verdict(False, MISMATCH, None)
        age = ts - a.ts
        if not same_aspect(a.shape, (int(shape[0]), int(shape[1]))):
            return Verdict(False, MISMATCH, age)
        if not self.lockstep and age > self.limit():
            return Verdict(False, STALE, age)
        return Verdict(True, "", age)

"""The applied mask: which frame it belongs to, whether a new one replaces it, and whether a frame
may be shown with it. The hide-or-show rule lives here and nowhere else.

Pure: no sockets, no clock. A mask's age is the capture time of the frame being shown minus the
capture time of the frame the mask was computed on, both stamped by capture; the latter comes from
the compositor's own record of the frame it handed out, never from the worker.

Verdict for a frame, in privacy mode (``Output.hidden``):

* ``"waiting"``: no mask accepted yet;
* ``"mismatch"``: the mask belongs to another stream (a restarted capture) or to a frame of
  another aspect (another camera mode);
* ``"stale"``: the mask is older than ``max_age`` (never in lock-step, where every frame waits for
  its own mask);
* ``""``: shown with the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

# Aspect-ratio tolerance (rounding of sizes): compose.render uses the same one.
from compositor.compose import ASPECT_TOLERANCE

WAITING, STALE, MISMATCH = "waiting", "stale", "mismatch"

# Why a mask image is refused (counted by these reasons, like the provenance ones).
MASK_TOO_LARGE = "mask_too_large"
MASK_ASPECT = "mask_aspect"


def aspect_matches(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """(h, w) sizes of the same aspect, within ``ASPECT_TOLERANCE``."""
    ra, rb = a[1] / a[0], b[1] / b[0]
    return abs(ra - rb) <= ASPECT_TOLERANCE * rb


def mask_problem(mask_shape: tuple[int, ...], frame_shape: tuple[int, ...]) -> str:
    """Why a mask image cannot belong to a frame ("" if it can): it must have the frame's aspect
    and at most the frame's size (a bigger one is wasted memory at best, an attack at worst)."""
    mh, mw = mask_shape[:2]
    fh, fw = frame_shape[:2]
    if mh > fh or mw > fw:
        return MASK_TOO_LARGE
    if not aspect_matches((mh, mw), (fh, fw)):
        return MASK_ASPECT
    return ""


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


class MaskSlot:
    """The newest mask wins (per stream); the verdict for every frame. See the module docstring."""

    def __init__(self, max_age: float, lockstep: bool = False) -> None:
        self.max_age = max_age
        self.lockstep = lockstep
        self.applied: Applied | None = None
        self.stream: int | None = None  # the stream of the newest frame seen

    def see_frame(self, stream: int) -> None:
        """A frame of ``stream`` arrived: masks of any other stream can no longer win."""
        self.stream = stream

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
        self.applied = Applied(stream, frame_id, ts, (int(shape[0]), int(shape[1])))

    def verdict(self, stream: int, ts: float, shape: tuple[int, int]) -> Verdict:
        """May a frame (of ``stream``, captured at ``ts``, size ``shape``) be shown?"""
        a = self.applied
        if a is None:
            return Verdict(False, WAITING, None)
        if a.stream != stream:
            return Verdict(False, MISMATCH, None)
        age = ts - a.ts
        if not aspect_matches(a.shape, (int(shape[0]), int(shape[1]))):
            return Verdict(False, MISMATCH, age)
        if not self.lockstep and age > self.max_age:
            return Verdict(False, STALE, age)
        return Verdict(True, "", age)

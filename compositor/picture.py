"""The picture side: accepted masks go into the compose state (and the motion compensator), and
each received frame becomes the display's ``Output`` (verdict, motion, compositing, stats).

No sockets. The per-frame rule is ``MaskSlot.verdict``; compositing is ``compose.render``; motion
is ``motion.MotionCompensator``. This module only wires them in the right order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from common import protocol
from common.stats import Stats
from compositor import compose
from compositor.dispatch import InFlight
from compositor.maskslot import MISMATCH, MaskSlot

MAX_AGE_MS = 1e9  # Output.mask_age_ms range


class Tracker(Protocol):
    """What the compositor needs of ``compositor.motion.MotionCompensator``."""

    def observe(self, frame_id: int, frame: np.ndarray) -> None: ...
    def new_mask(self, alpha: np.ndarray, frame_id: int, mask_frame: np.ndarray) -> None: ...
    def track(self, frame_id: int, frame: np.ndarray): ...  # -> Tracked | None
    def reset(self) -> None: ...


class Picture:
    """Compose state + mask slot + motion compensator (None: off). See the module docstring."""

    def __init__(
        self,
        look: compose.ComposeState,
        slot: MaskSlot,
        stats: Stats,
        *,
        motion: Tracker | None = None,
        save_alpha: Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.look = look
        self.slot = slot
        self.stats = stats
        self.motion = motion
        self.save_alpha = save_alpha
        self.clock = clock
        self.stream: int | None = None

    def apply_mask(self, rec: InFlight, mask: np.ndarray) -> None:
        """Take a genuine, newest mask computed on the handed-out frame ``rec.frame``."""
        f = rec.frame
        compose.accept_mask(self.look, mask, f.image, continuous=not f.still)
        self.slot.accept(f.stream, f.frame_id, f.ts, f.image.shape[:2])
        if self.motion is not None and not f.still and self.look.mask is not None:
            self.motion.new_mask(self.look.mask.alpha, f.frame_id, f.image)

    def composite(self, frame: protocol.Frame, privacy: bool) -> tuple[protocol.Output, np.ndarray]:
        """The display's message for ``frame`` and the alpha applied (for ``--save-alpha``)."""
        self._follow_stream(frame.stream, frame.ts)
        verdict = self.slot.verdict(frame.stream, frame.ts, frame.image.shape[:2])
        tracked = self._motion(frame, track=privacy and verdict.show)
        alpha, guide = (None, None) if tracked is None else (tracked.alpha, tracked.picture)
        t0 = self.clock()
        rendered = compose.render(
            self.look, frame.image, privacy=privacy, mask_ok=verdict.show, alpha=alpha, guide=guide
        )
        self.stats.sample("compose_ms", (self.clock() - t0) * 1000)
        age_ms = None
        if verdict.age_s is not None:
            age_ms = min(max(verdict.age_s * 1000, 0.0), MAX_AGE_MS)
            self.stats.sample("mask_age_ms", age_ms)
        hidden = verdict.hidden if privacy else ""
        if rendered.fail_closed and not hidden:
            hidden = MISMATCH  # compose refused the mask for this frame (its own aspect check)
        out = protocol.Output(
            frame_id=frame.frame_id,
            ts=frame.ts,
            stream=frame.stream,
            index=frame.index,
            still=frame.still,
            fps=frame.fps,
            privacy=privacy,
            fail_closed=bool(rendered.fail_closed),
            hidden=hidden,
            mask_age_ms=None if age_ms is None else round(age_ms, 1),
            image=rendered.image,
        )
        return out, rendered.alpha

    def saved(self, frame: protocol.Frame, alpha: np.ndarray) -> None:
        """``--save-alpha``: the alpha applied to a frame that was sent, as DIR/<index>.png."""
        if self.save_alpha is not None:
            cv2.imwrite(str(self.save_alpha / f"{frame.index:06d}.png"), alpha)

    def _follow_stream(self, stream: int, ts: float) -> None:
        if stream != self.stream:
            if self.motion is not None and self.stream is not None:
                self.motion.reset()  # a restarted capture: nothing carries over
            self.stream = stream
        self.slot.see_frame(stream, ts)

    def _motion(self, frame: protocol.Frame, track: bool):  # -> motion.Tracked | None
        """Observe every moving frame; the tracked mask (its alpha, and the frame at flow
        resolution that the compositing reuses as its guide) if this frame is shown with one."""
        if self.motion is None or frame.still:
            return None
        self.motion.observe(frame.frame_id, frame.image)
        if not track:
            return None
        tracked = self.motion.track(frame.frame_id, frame.image)
        if tracked is None:
            return None
        self.stats.sample("motion_ms", tracked.ms)
        self.stats.sample("motion_hidden_share", tracked.hidden_share)
        self.stats.count("motion_tracked_frames")
        self.stats.count("motion_hidden_frames", int(tracked.hidden_share > 0))  # any pixel
        return tracked

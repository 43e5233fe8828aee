"""Replacement backgrounds: a still image, a looping video or a solid colour, fitted to the frame.

Why a separate module: opening and validating user files is the only part of compositing that
touches the file system, and it must fail early with a clear ``FatalError`` (at ``new_state``),
never in the middle of the per-frame loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.errors import FatalError


def fit_background(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale ``image`` to cover ``height`` x ``width`` and centre-crop the overflow.

    Why cover-and-crop: stretching distorts photos visibly, letterboxing leaves bars that look like
    a broken camera; cropping the edges of a backdrop is what video-call products do.
    """
    ih, iw = image.shape[:2]
    scale = max(height / ih, width / iw)
    sw, sh = max(width, round(iw * scale)), max(height, round(ih * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (sw, sh), interpolation=interp)
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])


def solid_background(color_bgr: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    """A frame-sized image of one colour."""
    out = np.empty((height, width, 3), np.uint8)
    out[:] = color_bgr
    return out


@dataclass
class VideoBackground:
    """A background video played in real time and looped; decodes only when a new frame is due.

    Why wall-clock paced instead of one video frame per camera frame: the camera rate varies
    (15-60 fps) and the backdrop should play at its own speed; decoding once per due frame also
    keeps the per-frame cost at "nothing" for most camera frames.
    """

    path: Path
    capture: cv2.VideoCapture
    period: float  # seconds per video frame
    current: np.ndarray  # last decoded frame (source size)
    due: float = 0.0  # monotonic time the next frame is due
    fitted: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def frame_for(self, height: int, width: int, now: float | None = None) -> np.ndarray:
        """The video frame due now, fitted to ``height`` x ``width`` (cached until it changes)."""
        now = time.monotonic() if now is None else now
        if now >= self.due:
            ok, img = self.capture.read()
            if not ok:  # end of file: loop
                self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, img = self.capture.read()
            if ok and img is not None:
                self.current = img
                self.fitted.clear()
            # Never try to catch up by decoding a burst after a stall: resync to now instead.
            self.due = max(self.due + self.period, now)
        key = (height, width)
        if key not in self.fitted:
            self.fitted.clear()
            self.fitted[key] = fit_background(self.current, height, width)
        return self.fitted[key]


@dataclass
class ImageBackground:
    """A still background image, fitted once per frame size."""

    image: np.ndarray
    fitted: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def frame_for(self, height: int, width: int, now: float | None = None) -> np.ndarray:
        key = (height, width)
        if key not in self.fitted:
            self.fitted.clear()
            self.fitted[key] = fit_background(self.image, height, width)
        return self.fitted[key]


@dataclass
class ColorBackground:
    """A solid colour, built once per frame size."""

    color: tuple[int, int, int]
    fitted: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def frame_for(self, height: int, width: int, now: float | None = None) -> np.ndarray:
        key = (height, width)
        if key not in self.fitted:
            self.fitted.clear()
            self.fitted[key] = solid_background(self.color, height, width)
        return self.fitted[key]


Background = ImageBackground | VideoBackground | ColorBackground


def open_background(path: Path) -> ImageBackground | VideoBackground:
    """Open ``path`` as an image, else as a video; ``FatalError`` with the reason otherwise."""
    path = Path(path)
    if not path.exists():
        raise FatalError(f"background file {path} does not exist")
    if not path.is_file():
        raise FatalError(f"background {path} is not a file")
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        raise FatalError(f"background file {path} is not readable: {exc.strerror}") from None
    if size == 0:
        raise FatalError(f"background file {path} is empty")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is not None and image.size > 0:
        return ImageBackground(image)
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok or first is None or first.size == 0:
        capture.release()
        raise FatalError(
            f"background file {path} is not an image or video OpenCV can read "
            "(use e.g. .jpg/.png or .mp4)"
        )
    fps = capture.get(cv2.CAP_PROP_FPS)
    period = 1.0 / fps if 1.0 <= fps <= 240.0 else 1.0 / 30.0
    return VideoBackground(path, capture, period, first, due=time.monotonic() + period)

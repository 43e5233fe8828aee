"""Recording the call picture: ``--output FILE`` (.mp4 survives a crash, .avi/.mkv do not)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from common.errors import FatalError
from display.mp4 import FRAGMENT_S, FragmentedMp4


class Recording(Protocol):
    def add(self, image: np.ndarray, now: float) -> None: ...
    def flush_if_due(self, now: float) -> None: ...
    def close(self) -> None: ...


class OpenCvRecording:
    """.avi/.mkv through OpenCV's FFmpeg writer (Motion-JPEG); buffered, so not crash-safe."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.size = size
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
        if not self.writer.isOpened():
            raise FatalError(
                f"cannot write video {path} (codec unavailable or folder not writable)"
            )

    def add(self, image: np.ndarray, now: float) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)

    def flush_if_due(self, now: float) -> None:
        pass

    def close(self) -> None:
        self.writer.release()


def open_recording(path: Path, fps: float, size: tuple[int, int], log: logging.Logger) -> Recording:
    """A recording of ``size`` pictures at ``fps``; says in the log how safe it is."""
    if path.suffix.lower() != ".mp4":
        log.warning(
            "recording to %s: NOT crash-safe (if the display is killed, up to ~0.5 MB at the "
            "end is lost); use a .mp4 name for a recording that survives a crash",
            path,
        )
        return OpenCvRecording(path, fps, size)
    try:
        rec = FragmentedMp4(path, fps, size)
    except OSError as exc:
        raise FatalError(f"cannot write video {path}: {exc.strerror}") from None
    log.info(
        "recording to %s: fragmented MP4, Motion-JPEG %dx%d at %.2f fps; written every %.1f s, "
        "so it stays playable if the display is killed",
        path,
        size[0],
        size[1],
        fps,
        FRAGMENT_S,
    )
    return rec

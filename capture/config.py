"""Capture's settings (no OpenCV import: the launcher reads them to build the command line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import option, require
from common.endpoints import DEFAULTS


@dataclass(frozen=True)
class CaptureConfig:
    """What to read and where to send it; validated when built."""

    source: str = option("0", "camera index, video file, image file or folder of images")
    width: int = option(640, "working width, aspect kept (0 = the source's own width)")
    fps: float = option(30.0, "rate for still images and folders")
    loop: bool = option(False, "repeat file sources forever")
    lockstep: bool = option(False, "offline: no pacing, no drops, wait for the compositor")
    bind: str = option(DEFAULTS.frames, "endpoint the compositor connects to")
    max_frames: int = option(0, "stop after N frames (0 = no limit)")
    stats_json: Path | None = option(None, "write stats JSON here")

    def __post_init__(self) -> None:
        require(
            self.width == 0 or 16 <= self.width,
            f"--width {self.width} is too small (use 0 for the source's size, or >= 16)",
        )
        require(0 < self.fps <= 240, f"--fps {self.fps} must be in (0, 240]")
        require(self.max_frames >= 0, "--max-frames must be >= 0")

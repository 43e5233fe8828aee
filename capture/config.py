"""Capture's settings (no OpenCV import: the launcher reads them to build the command line)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from common.config import option, require
from common.endpoints import DEFAULTS

MAX_WIDTH = 3840  # 4K: what the links carry (sockets refuse bigger messages)


def parse_size(text: str) -> tuple[int, int]:
    """``1280x720`` -> (1280, 720)."""
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and 0 < int(w) <= 8192 and 0 < int(h) <= 8192):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 1280x720, got {text!r}")
    return int(w), int(h)


def show_size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass(frozen=True)
class CaptureConfig:
    """What to read and where to send it; validated when built."""

    source: str = option("0", "camera index, video file, image file or folder of images")
    width: int = option(
        640, f"working width, aspect kept, never enlarged (0 = as is; <= {MAX_WIDTH})"
    )
    fps: float = option(30.0, "rate for still images and folders")
    camera_size: tuple[int, int] | None = option(
        None,
        "ask the camera for this size, e.g. 1280x720",
        parse=parse_size,
        show=show_size,
        metavar="WxH",
    )
    camera_fps: float | None = option(None, "ask the camera for this frame rate")
    loop: bool = option(
        False, "repeat video files and folders forever (a single picture always repeats)"
    )
    lockstep: bool = option(False, "offline: no pacing, no drops, wait for the compositor")
    bind: str = option(DEFAULTS.frames, "endpoint the compositor connects to")
    max_frames: int = option(0, "stop after N frames (0 = no limit)")
    link_keys: Path | None = option(
        None, "this run's key for TCP links between stages (the launcher makes it with --links tcp)"
    )
    stats_json: Path | None = option(None, "write stats JSON here")

    def __post_init__(self) -> None:
        require(
            self.width == 0 or 16 <= self.width <= MAX_WIDTH,
            f"--width {self.width} must be 0 (the source's size) or 16..{MAX_WIDTH}",
        )
        require(
            math.isfinite(self.fps) and 0 < self.fps <= 240, f"--fps {self.fps} must be in (0, 240]"
        )
        if self.camera_fps is not None:
            require(
                math.isfinite(self.camera_fps) and 0 < self.camera_fps <= 240,
                f"--camera-fps {self.camera_fps} must be in (0, 240]",
            )
        require(self.max_frames >= 0, "--max-frames must be >= 0")
        require("\0" not in self.source, "--source must not contain a NUL character")
        require(
            self.bind.startswith(("tcp://", "ipc://", "inproc://")),
            f"--bind {self.bind!r}: use tcp://HOST:PORT or ipc://PATH",
        )
        if self.stats_json is not None:
            require(
                self.stats_json.parent.resolve().is_dir(),
                f"--stats-json {self.stats_json}: folder {self.stats_json.parent} does not exist",
            )

"""Compositor's settings (no OpenCV import: the launcher reads them to build the command line)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from common.config import on_off, option, require, show_on_off
from common.endpoints import DEFAULTS

# Default staleness limit, from measurement: the slowest shipped model (Mask R-CNN, 100 proposals)
# takes 2-3 s a forward pass on a 2-core laptop-class CPU while the pipeline runs beside it, so a
# mask is normally up to two forward passes old when replaced (p95 ~5 s measured here). 6 s keeps
# that steady state from blinking to fail-closed, yet hides the room within seconds when a worker
# really stops. launch.py uses each model's own value (inference.config.MAX_MASK_AGE_S).
DEFAULT_MAX_MASK_AGE = 6.0


@dataclass(frozen=True)
class CompositorConfig:
    """Links, the look, and how workers are served; validated when built."""

    frames: str = option(DEFAULTS.frames, "capture's endpoint to connect to")
    infer_bind: str = option(DEFAULTS.infer, "where inference workers connect")
    out_bind: str = option(DEFAULTS.out, "where the display connects")
    control_bind: str = option(DEFAULTS.control, "where the display sends key commands")
    privacy: bool = option(
        True, "privacy mode at start", parse=on_off, show=show_on_off, metavar="on|off"
    )
    # 3.2: two cycles per letter of text a quarter of the frame high (of its shorter side) keep
    # at most 1 % contrast at every size and aspect (tests/test_blur_default.py). The Gaussian
    # alone needs 3.14 for that (exp(-2 pi^2 (sigma / period)^2) <= 0.01); 3.0 met it at 640x360
    # only with help from the box downscales, and kept 1.5 % at 854x480, 1920x1080 and 4:3.
    # 1 is the tutorial's look, which leaves such text legible.
    blur: float = option(
        3.2, "background blur: 1 = the tutorial's look, 3.2 hides text up to 1/4 of the height"
    )
    background: Path | None = option(None, "replace the background with this image or video")
    background_color: str | None = option(None, "replace the background with a colour: '#2040a0'")
    refine: bool = option(True, "apply the raw model mask (bilinear only): the quality baseline")
    temporal: bool = option(True, "no temporal mask smoothing")
    motion: bool = option(True, "no motion compensation of reused masks (the old design)")
    max_mask_age: float = option(
        DEFAULT_MAX_MASK_AGE,
        "older masks are not trusted: the whole picture is hidden (s; raised to 1.5x the age "
        "masks normally reach where the model is slower than that)",
    )
    lockstep: bool = option(False, "offline: every frame waits for its own mask")
    worker_timeout: float = option(15.0, "a worker silent this long on a frame loses its slot (s)")
    max_in_flight: int = option(
        8, "at most this many frames handed to workers at once (each is kept until its mask)"
    )
    remote_encoding: str = option(
        "jpeg", "frames to non-loopback workers (loopback is always raw)", choices=("raw", "jpeg")
    )
    jpeg_quality: int = option(85, "JPEG quality for remote workers")
    keys: Path | None = option(None, "key folder ('python -m inference keys') for workers")
    save_alpha: Path | None = option(None, "write the applied alpha of every frame as PNGs here")
    link_keys: Path | None = option(
        None, "this run's key for TCP links between stages (the launcher makes it with --links tcp)"
    )
    stats_json: Path | None = option(None, "write stats JSON here")

    def __post_init__(self) -> None:
        require(math.isfinite(self.blur) and self.blur > 0, "--blur must be a number > 0")
        require(
            math.isfinite(self.max_mask_age) and self.max_mask_age > 0,
            f"--max-mask-age must be a finite number of seconds > 0, got {self.max_mask_age}",
        )
        require(
            math.isfinite(self.worker_timeout) and self.worker_timeout > 0,
            "--worker-timeout must be > 0 seconds",
        )
        require(1 <= self.jpeg_quality <= 100, "--jpeg-quality must be in 1..100")
        require(1 <= self.max_in_flight <= 64, "--max-in-flight must be in 1..64")
        require(
            self.background is None or self.background.is_file(),
            f"--background {self.background} is not a file (give an image or a video)",
        )
        require(
            self.background is None or self.background_color is None,
            "use either --background or --background-color, not both",
        )

"""Inference worker settings (no OpenCV import: the launcher reads them for the command line)."""

from __future__ import annotations

import math
import os
import pkgutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from common.config import option, require
from common.endpoints import DEFAULTS

# How old a model's masks may get before privacy fails closed (seconds). A fast model's masks are
# normally a frame old, so a mask a second old means its worker stopped; a slow model's masks are
# normally seconds old. Each segmenter module states its own MAX_MASK_AGE_S; this table repeats it
# so the launcher need not import OpenCV and every model to read it (a test keeps them equal).
MAX_MASK_AGE_S = {"maskrcnn": 6.0, "selfie": 1.0}
DEFAULT_MAX_MASK_AGE_S = 6.0


# The fields that choose and tune the model (launch.py offers exactly these as its model flags).
MODEL_FIELDS = (
    "model",
    "model_dir",
    "confidence",
    "mask_threshold",
    "people",
    "proposals",
    "input_size",
    "threads",
    "selfie_variant",
)


def model_names() -> list[str]:
    """Segmenter modules in inference/segmenters (module name = model name), without importing."""
    here = Path(__file__).resolve().parent / "segmenters"
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def max_mask_age(model: str) -> float:
    return MAX_MASK_AGE_S.get(model, DEFAULT_MAX_MASK_AGE_S)


@dataclass(frozen=True)
class WorkerConfig:
    """Which compositor to serve, which model with which knobs; validated when built."""

    connect: str = option(DEFAULTS.infer, "the compositor's worker endpoint")
    model: str = option("maskrcnn", "segmentation model", choices=model_names())
    model_dir: Path | None = option(None, "folder holding the model's files")
    confidence: float = option(0.5, "Mask R-CNN person score threshold")
    mask_threshold: float = option(0.3, "Mask R-CNN mask threshold")
    people: str = option(
        "main", "keep the main person at the camera, or everyone", choices=("main", "all")
    )
    proposals: int = option(100, "Mask R-CNN detections kept (100 = as shipped; 20 is ~4x faster)")
    input_size: int = option(0, "model input size (0 = the model's default)")
    threads: int = option(0, "OpenCV threads for inference (0 = all cores; runs at low priority)")
    selfie_variant: str = option(
        "auto", "selfie model input shape", choices=("auto", "square", "landscape")
    )
    mask_interval: float = option(
        0.0,
        "produce at most one mask every S seconds, resting in between (0 = as fast as it can)",
        metavar="S",
    )
    name: str = option("", "worker name in stats (default host-pid)")
    nice: int = option(10, "lower this process's CPU priority by N (camera-rate stages first)")
    liveness: float = option(5.0, "seconds of compositor silence before reconnecting")
    keys: Path | None = option(None, "key folder (from 'keys') for encrypted non-loopback links")
    link_keys: Path | None = option(
        None, "this run's key for TCP links between stages (the launcher makes it with --links tcp)"
    )
    stats_json: Path | None = option(None, "write stats JSON here")
    verbose: bool = option(False, "a status line every second (default: every 5 s)")
    extra: dict = field(default_factory=dict, metadata={"cli": False})

    def __post_init__(self) -> None:
        require(
            self.connect.startswith(("tcp://", "ipc://")),
            f"--connect {self.connect!r} must look like tcp://HOST:PORT",
        )
        require(
            0.0 <= self.confidence <= 1.0 and 0.0 <= self.mask_threshold < 1.0,
            "--confidence must be in [0, 1] and --mask-threshold in [0, 1)",
        )
        require(1 <= self.proposals <= 100, f"--proposals {self.proposals} must be in 1..100")
        require(self.threads >= 0 and self.input_size >= 0, "--threads, --input-size must be >= 0")
        require(
            math.isfinite(self.mask_interval) and 0 <= self.mask_interval <= 3600,
            "--mask-interval must be between 0 and 3600 seconds",
        )
        require(self.liveness > 0.5, "--liveness must be > 0.5 s (heartbeats come every second)")
        require(0 <= self.nice <= 19, "--nice must be in 0..19")

    @property
    def worker_name(self) -> str:
        return self.name or f"{socket.gethostname()}-{os.getpid()}"

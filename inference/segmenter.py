"""The segmenter interface every model implements.

Why one small interface: the inference worker, benchmarks and quality tests only ever call
``open_segmenter(name, ...)`` and ``segmenter.segment(frame)``. Adding a model is one new module in
``inference/segmenters/`` that defines ``NAME`` and ``open(model_dir, options) -> Segmenter``; it is
discovered by name, nothing else changes (plus its files in the ``models/`` manifest).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import FatalError
from common.protocol import MASK_ASPECT_TOLERANCE, mask_problem


@dataclass(frozen=True)
class Person:
    """One detected person, in frame pixel coordinates (x0, y0, x1, y1), x1/y1 exclusive."""

    box: tuple[int, int, int, int]
    score: float


@dataclass(frozen=True)
class Segmentation:
    """A model's answer for one frame.

    ``mask`` is uint8, frame-sized (H, W), 0..255 = soft person probability: the compositor does the
    thresholding, feathering and refinement, so models must not binarise. ``people`` lists the
    per-person results where the model has them (Mask R-CNN), empty otherwise (selfie).
    """

    mask: np.ndarray
    people: tuple[Person, ...] = ()
    # The same probability on the model's own grid (same aspect as the frame, no larger), where
    # the model has one: what the worker sends, since the compositor upsamples guided by the
    # frame anyway (6x fewer pixels on the wire at 640 wide, 25x at 720p; same edge quality).
    native: np.ndarray | None = None

    def wire_mask(self, frame_shape: tuple[int, ...]) -> np.ndarray:
        """The mask to send for a frame of ``frame_shape``: the native grid if it fits, i.e. no
        larger than the frame and of its aspect. Why the aspect check: a grid only a few cells
        high (a very wide frame, e.g. 3840x96 -> 256x6) is rounded away from the frame's aspect,
        and the compositor would refuse every such mask (the call would stay hidden)."""
        n = self.native
        # half the contract's tolerance: a margin for the receiver's own rounding
        if n is None or mask_problem(n.shape, frame_shape, 0.5 * MASK_ASPECT_TOLERANCE):
            return self.mask
        return n


@dataclass(frozen=True)
class SegmenterOptions:
    """Model knobs, shared by all models; each model reads the ones that apply to it."""

    confidence: float = 0.5  # Mask R-CNN: minimum person score (tutorial default)
    mask_threshold: float = 0.3  # Mask R-CNN: per-pixel threshold the soft mask is centred on
    people: str = "main"  # "main" (the person at the camera) or "all"
    proposals: int = 100  # Mask R-CNN: both keep_top_k limits of the text graph (100 = as shipped)
    input_size: int = 0  # model input size in pixels (longest side); 0 = the model's default
    threads: int = 0  # OpenCV threads for the forward pass; 0 = leave OpenCV's default
    selfie_variant: str = "auto"  # "auto" (by frame aspect), "square" or "landscape"
    extra: dict = field(default_factory=dict)


class Segmenter(Protocol):
    """What a loaded model offers. ``segment`` takes a BGR uint8 frame of any size."""

    name: str

    def segment(self, frame: np.ndarray) -> Segmentation: ...


def available() -> list[str]:
    """Names of every segmenter module in ``inference/segmenters``."""
    from inference import segmenters

    names = []
    for info in pkgutil.iter_modules(segmenters.__path__):
        if not info.name.startswith("_"):
            names.append(getattr(_module(info.name), "NAME", info.name))
    return sorted(names)


def _module(modname: str):
    return importlib.import_module(f"inference.segmenters.{modname}")


DEFAULT_MAX_MASK_AGE_S = 6.0  # = compositor.run.DEFAULT_MAX_MASK_AGE (stages share no code)


def max_mask_age(name: str) -> float:
    """How old a mask of this model may get before privacy fails closed (seconds).

    A model module may set ``MAX_MASK_AGE_S``: a fast model's masks are normally a frame old, so
    a mask seconds old means its worker has stopped, and the room should be hidden at once; a
    slow model's masks are normally seconds old. Without it, the slow-model default applies.
    """
    from inference import segmenters

    for info in pkgutil.iter_modules(segmenters.__path__):
        mod = _module(info.name)
        if getattr(mod, "NAME", None) == name:
            return float(getattr(mod, "MAX_MASK_AGE_S", DEFAULT_MAX_MASK_AGE_S))
    return DEFAULT_MAX_MASK_AGE_S


def open_segmenter(
    name: str, model_dir: Path | None = None, options: SegmenterOptions | None = None
) -> Segmenter:
    """Load model ``name``; raises ``FatalError`` with a one-line, actionable message on failure."""
    from inference import segmenters

    for info in pkgutil.iter_modules(segmenters.__path__):
        mod = _module(info.name)
        if getattr(mod, "NAME", None) == name:
            return mod.open(model_dir, options or SegmenterOptions())
    raise FatalError(f"unknown model {name!r}; choose one of: {', '.join(available())}")

"""MediaPipe Selfie Segmentation (TFLite) through ``cv2.dnn.readNetFromTFLite``.

Why: it is 40-100x cheaper than Mask R-CNN (docs/models.md) and made for exactly this job (one
person close to a webcam). Two builds exist, 256x256 ("square") and 144x256 ("landscape"); "auto"
picks by the frame's aspect so a 16:9 camera frame is squeezed as little as possible.

The frame is *letterboxed* into the network input (aspect kept, grey padding), not stretched:
measured side by side (bench/bench_models.py, docs/models.md) with the default "auto" build, mean
IoU on gt_images is 0.820 letterboxed vs 0.790 stretched, and equal (0.811) on 16:9 video frames,
where the landscape build's input has the frame's aspect and both fits are the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.errors import FatalError
from inference.segmenter import Segmentation, SegmenterOptions

NAME = "selfie"
# Masks are normally one frame (~40 ms) old; one second without a new one means the worker has
# stopped, and the room is hidden (measured mask age p95 42 ms at 24 fps).
MAX_MASK_AGE_S = 1.0
INPUT_SIZES = {"square": (256, 256), "landscape": (256, 144)}  # (w, h)
LANDSCAPE_ASPECT = 1.55  # w/h above: 144x256 build; between 4:3 (1.33, square) and 16:9 (1.78)


def pick_variant(frame_w: int, frame_h: int, setting: str = "auto") -> str:
    """The model build for a frame: ``setting`` itself, or by aspect ratio for "auto"."""
    if setting in INPUT_SIZES:
        return setting
    if setting != "auto":
        raise FatalError(f'selfie variant must be "auto", "square" or "landscape", got {setting!r}')
    return "landscape" if frame_w / frame_h > LANDSCAPE_ASPECT else "square"


def letterbox_geometry(
    frame_w: int, frame_h: int, in_w: int, in_h: int
) -> tuple[int, int, int, int]:
    """Scaled (w, h) and (left, top) offset of a frame fitted inside the input keeping aspect."""
    scale = min(in_w / frame_w, in_h / frame_h)
    w, h = max(int(round(frame_w * scale)), 1), max(int(round(frame_h * scale)), 1)
    return w, h, (in_w - w) // 2, (in_h - h) // 2


def to_blob(frame: np.ndarray, size: tuple[int, int], fit: str = "letterbox") -> np.ndarray:
    """NCHW RGB float blob in [0, 1]: the frame stretched to ``size``, or letterboxed (grey pad)."""
    if fit == "stretch":
        return cv2.dnn.blobFromImage(frame, 1 / 255.0, size, swapRB=True)
    fh, fw = frame.shape[:2]
    w, h, left, top = letterbox_geometry(fw, fh, *size)
    canvas = np.full((size[1], size[0], 3), 127, np.uint8)
    # Same interpolation as blobFromImage's stretch, so the comparison measures the fit alone.
    scaled = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
    canvas[top : top + h, left : left + w] = scaled
    return cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True)


def native_prob(prob: np.ndarray, frame_w: int, frame_h: int, fit: str = "letterbox"):
    """The network's probability map with the letterbox cut off: the frame's area only."""
    if fit == "stretch":
        return prob
    w, h, left, top = letterbox_geometry(frame_w, frame_h, prob.shape[1], prob.shape[0])
    return prob[top : top + h, left : left + w]


def to_uint8(prob: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_mask(prob: np.ndarray, frame_w: int, frame_h: int, fit: str = "letterbox") -> np.ndarray:
    """The network's (h, w) probability map -> frame-sized soft uint8 mask, bilinear."""
    crop = native_prob(prob, frame_w, frame_h, fit).astype(np.float32)
    return to_uint8(cv2.resize(crop, (frame_w, frame_h), interpolation=cv2.INTER_LINEAR))


def load_net(path: Path) -> cv2.dnn.Net:
    """Read one .tflite build; ``FatalError`` naming the file if OpenCV cannot."""
    try:
        net = cv2.dnn.readNetFromTFLite(str(path))
    except cv2.error as e:
        msg = str(e).strip().splitlines()[-1][:200] if str(e).strip() else "unknown error"
        raise FatalError(
            f"OpenCV cannot load the selfie model {path} ({msg}); the file is corrupt or not a "
            f"MediaPipe selfie_segmentation .tflite: re-fetch it (python -m models fetch selfie)"
        ) from e
    if net.empty():
        raise FatalError(f"OpenCV loaded an empty network from {path}; re-fetch the model")
    return net


@dataclass
class Selfie:
    """Loaded selfie segmenter; nets are loaded lazily, one per build actually used."""

    files: dict[str, Path]
    options: SegmenterOptions
    name: str = NAME
    fit: str = "letterbox"  # "stretch" kept for the side-by-side measurement in bench/
    nets: dict[str, cv2.dnn.Net] = field(default_factory=dict)

    def net(self, variant: str) -> cv2.dnn.Net:
        """The net for ``variant``, loaded on first use."""
        if variant not in self.nets:
            self.nets[variant] = load_net(self.files[variant])
        return self.nets[variant]

    def segment(self, frame: np.ndarray) -> Segmentation:
        """Person probability for every pixel of a BGR uint8 frame."""
        h, w = frame.shape[:2]
        variant = pick_variant(w, h, self.options.selfie_variant)
        net = self.net(variant)
        net.setInput(to_blob(frame, INPUT_SIZES[variant], self.fit))
        try:
            out = net.forward()
        except cv2.error as e:
            raise FatalError(
                f"selfie model {self.files[variant]} failed on a {w}x{h} frame: "
                f"{str(e).strip().splitlines()[-1][:200]}"
            ) from e
        in_w, in_h = INPUT_SIZES[variant]
        prob = out.reshape(in_h, in_w)
        native = None if self.fit == "stretch" else to_uint8(native_prob(prob, w, h))
        return Segmentation(mask=to_mask(prob, w, h, self.fit), people=(), native=native)


def open(model_dir: Path | None, options: SegmenterOptions) -> Selfie:  # noqa: A001
    """Resolve the files; load the build(s) the options make certain to be needed right away."""
    from models import store

    files = store.resolve(NAME, model_dir)
    if options.threads > 0:
        cv2.setNumThreads(options.threads)
    seg = Selfie(files=files, options=options)
    if options.selfie_variant != "auto":
        seg.net(pick_variant(1, 1, options.selfie_variant))  # fail at start, not on frame 1
    else:
        seg.net("square")  # cheap (~250 KB); proves the files load before the first frame
    return seg

"""Mask R-CNN (Inception-v2, COCO) through OpenCV's TensorFlow importer.

Why these choices:

* The graph's cost is dominated by how many proposals reach the mask head: ``keep_top_k`` of the
  first-stage and of the final ``DetectionOutput`` (100 each as shipped). ``options.proposals``
  rewrites both in the text graph at load time, in memory (``readNetFromTensorflow`` accepts the
  .pb and .pbtxt as uint8 buffers on 4.12 and 5.0), so no temp file and no edited copy on disk.
* The 15x15 per-person masks are resized into their boxes bilinearly on the *float* probabilities
  and kept soft: nearest-neighbour or a thresholded resize gives 15x15 staircase edges that no later
  feathering hides. The compositor does the thresholding, so the probability ``p`` is mapped
  monotonically to 0..255 with ``p == mask_threshold`` at 127 (see ``soft_mask``).
* "Main person": in a video call the person at the camera is big and central. The tutorial keeps
  the highest-score detection, which is often a small, sharp bystander; ``main_person_score``
  weighs confidence with size and centrality instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.errors import FatalError
from inference.segmenter import Person, Segmentation, SegmenterOptions

NAME = "maskrcnn"
# Masks are normally up to two forward passes (2-3 s each on 2 cores) old: see compositor/run.py.
MAX_MASK_AGE_S = 6.0
PERSON_CLASS = 0  # class id of "person" in detection_out_final (line 1 of the COCO labels file)
OUTPUTS = ["detection_out_final", "detection_masks"]
SHIPPED_PROPOSALS = 100
_KEEP_TOP_K = re.compile(r'(key:\s*"keep_top_k"\s*value\s*\{\s*i:\s*)(\d+)')


def rewrite_keep_top_k(pbtxt: str, proposals: int) -> str:
    """Set both ``keep_top_k`` values (first stage and final detection) of the text graph.

    Raises ``ValueError`` unless exactly two are found: silently changing one would make the
    knob lie about what runs.
    """
    if proposals < 1:
        raise ValueError(f"proposals must be >= 1, got {proposals}")
    text, count = _KEEP_TOP_K.subn(lambda m: f"{m.group(1)}{proposals}", pbtxt)
    if count != 2:
        raise ValueError(f"expected 2 keep_top_k entries in the text graph, found {count}")
    return text


def soft_mask(prob: np.ndarray, mask_threshold: float) -> np.ndarray:
    """Map probabilities 0..1 to uint8 0..255, piecewise linear with ``mask_threshold`` -> 127.

    [0, thr] -> [0, 127] and [thr, 1] -> [127, 255]: monotone, keeps the full soft ramp, and a
    compositor cutting at 127/128 reproduces the tutorial's ``mask > threshold``.
    """
    thr = min(max(float(mask_threshold), 1e-6), 1 - 1e-6)
    return np.rint(np.interp(prob, [0.0, thr, 1.0], [0.0, 127.0, 255.0])).astype(np.uint8)


def pixel_box(norm_box: np.ndarray, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """Normalised (left, top, right, bottom) -> pixel (x0, y0, x1, y1), x1/y1 exclusive.

    Not clipped: ``paste_mask`` needs the full box to place the mask of a person cut by the edge.
    """
    left, top, right, bottom = (float(v) for v in norm_box)
    return (
        int(math.floor(left * frame_w)),
        int(math.floor(top * frame_h)),
        int(math.ceil(right * frame_w)),
        int(math.ceil(bottom * frame_h)),
    )


Box = tuple[int, int, int, int]


def clip_box(box: Box, frame_w: int, frame_h: int) -> Box:
    """Clip a pixel box to the frame."""
    x0, y0, x1, y1 = box
    return (
        min(max(x0, 0), frame_w),
        min(max(y0, 0), frame_h),
        min(max(x1, 0), frame_w),
        min(max(y1, 0), frame_h),
    )


def main_person_score(
    box: tuple[int, int, int, int], score: float, frame_w: int, frame_h: int
) -> float:
    """How likely a detection is the person at the camera: confidence x size x centrality.

    size = sqrt(box area / frame area) (square root so a person twice as large does not win by
    2x confidence); centrality = 1 - 0.6 * (distance of the box centre from the frame centre,
    normalised so a corner is 1). A small, sharp bystander at the edge (0.99, 2 % of the frame)
    thus loses to a large central person at 0.7.
    """
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0) * max(y1 - y0, 0) / float(frame_w * frame_h)
    dx = ((x0 + x1) / 2 - frame_w / 2) / (frame_w / 2)
    dy = ((y0 + y1) / 2 - frame_h / 2) / (frame_h / 2)
    dist = min(math.hypot(dx, dy) / math.sqrt(2), 1.0)
    return float(score) * math.sqrt(area) * (1.0 - 0.6 * dist)


# How much the main person of the previous frame is preferred: its score is multiplied by
# (1 + CONTINUITY * overlap with the previous box). Without it, two people of similar score swap
# from mask to mask and the picture flips between them; a person who really takes over the frame
# (much larger or more central) still wins.
CONTINUITY = 1.0


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two pixel boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pick_main(people: list[Person], frame_w: int, frame_h: int, previous: Box | None = None) -> int:
    """Index of the main person in ``people`` (which must not be empty).

    ``previous``: the main person's box in the last frame, which is preferred (``CONTINUITY``).
    """
    scores = [main_person_score(p.box, p.score, frame_w, frame_h) for p in people]
    if previous is not None:
        scores = [
            s * (1 + CONTINUITY * box_iou(p.box, previous))
            for s, p in zip(scores, people, strict=True)
        ]
    return int(np.argmax(scores))


def paste_mask(
    canvas: np.ndarray, mask15: np.ndarray, box: tuple[int, int, int, int], mask_threshold: float
) -> None:
    """Resize one low-res mask into its (unclipped) box bilinearly and max it into ``canvas``.

    Resizing to the unclipped box then cropping keeps the mask aligned for people cut by the frame
    edge; resizing into the clipped box would squash it.
    """
    frame_h, frame_w = canvas.shape
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = clip_box(box, frame_w, frame_h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    full = cv2.resize(mask15.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    part = full[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    region = canvas[cy0:cy1, cx0:cx1]
    np.maximum(region, soft_mask(part, mask_threshold), out=region)


def parse_detections(
    detections: np.ndarray,
    masks: np.ndarray,
    frame_w: int,
    frame_h: int,
    confidence: float = 0.5,
    mask_threshold: float = 0.3,
    people: str = "main",
    previous: Box | None = None,
) -> Segmentation:
    """Turn ``forward(["detection_out_final", "detection_masks"])`` into a ``Segmentation``.

    ``detections`` is (1, 1, N, 7) rows of [image, class, score, left, top, right, bottom]
    (normalised), ``masks`` is (N, classes, 15, 15). Keeps persons with score >= ``confidence``
    whose clipped box is non-empty. ``people="main"``: mask and ``people`` hold only the main
    person; ``"all"``: the union (max) of every person, ``people`` sorted by score. ``previous``
    is the last main person's box (see ``pick_main``).
    """
    if people not in ("main", "all"):
        raise FatalError(f'people must be "main" or "all", got {people!r}')
    rows = detections.reshape(-1, 7)
    found: list[tuple[Person, tuple[int, int, int, int], int]] = []
    for i, row in enumerate(rows):
        if int(row[1]) != PERSON_CLASS or float(row[2]) < confidence or i >= len(masks):
            continue
        raw = pixel_box(row[3:7], frame_w, frame_h)
        box = clip_box(raw, frame_w, frame_h)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        found.append((Person(box=box, score=float(row[2])), raw, i))
    canvas = np.zeros((frame_h, frame_w), np.uint8)
    if not found:
        return Segmentation(mask=canvas, people=())
    if people == "main":
        found = [found[pick_main([f[0] for f in found], frame_w, frame_h, previous)]]
    else:
        found.sort(key=lambda f: -f[0].score)
    for _person, raw, i in found:
        paste_mask(canvas, masks[i, PERSON_CLASS], raw, mask_threshold)
    return Segmentation(mask=canvas, people=tuple(f[0] for f in found))


def blob_size(frame_w: int, frame_h: int, input_size: int) -> tuple[int, int]:
    """Network input (w, h): the frame size for 0, else longest side = ``input_size``.

    The text graph has no resize of its own (the TF preprocessor was cut out), so the blob size
    *is* the resolution the network sees; aspect is kept because anchors are in pixels.
    """
    if input_size <= 0:
        return frame_w, frame_h
    scale = input_size / max(frame_w, frame_h)
    return max(int(round(frame_w * scale)), 1), max(int(round(frame_h * scale)), 1)


def load_net(pb: Path, pbtxt: Path, proposals: int) -> cv2.dnn.Net:
    """Read the graph with ``proposals`` applied; ``FatalError`` naming the file on any failure."""
    try:
        weights = pb.read_bytes()
        text = pbtxt.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FatalError(f"cannot read Mask R-CNN file: {e}") from e
    try:  # always, also at 100: it doubles as a check that this is the expected text graph
        text = rewrite_keep_top_k(text, proposals)
    except ValueError as e:
        raise FatalError(f"{pbtxt} is not the Mask R-CNN text graph expected: {e}") from e
    args: list = [np.frombuffer(weights, np.uint8), np.frombuffer(text.encode(), np.uint8)]
    if hasattr(cv2.dnn, "ENGINE_CLASSIC"):  # OpenCV >= 5: the new engine can't run this graph
        args.append(cv2.dnn.ENGINE_CLASSIC)
    try:
        net = cv2.dnn.readNetFromTensorflow(*args)
    except cv2.error as e:
        first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else "unknown error"
        raise FatalError(
            f"OpenCV cannot load Mask R-CNN from {pb} with {pbtxt} ({first}); the .pb is corrupt, "
            f"truncated or not mask_rcnn_inception_v2_coco_2018_01_28: re-fetch it "
            f"(python -m models fetch maskrcnn)"
        ) from e
    if net.empty():
        raise FatalError(f"OpenCV loaded an empty network from {pb}; re-fetch the model")
    return net


@dataclass
class MaskRCNN:
    """A loaded Mask R-CNN; ``last_rows`` is detection_out_final's row count of the last frame."""

    net: cv2.dnn.Net
    options: SegmenterOptions
    files: dict[str, Path]
    name: str = NAME
    last_rows: int = field(default=0)
    last_main: Box | None = None  # the main person's box in the last frame, for continuity
    last_size: tuple[int, int] = (0, 0)

    def segment(self, frame: np.ndarray) -> Segmentation:
        """Run the network on a BGR uint8 frame and parse its outputs."""
        h, w = frame.shape[:2]
        size = blob_size(w, h, self.options.input_size)
        blob = cv2.dnn.blobFromImage(frame, 1.0, size, swapRB=True, crop=False)
        self.net.setInput(blob)
        try:
            detections, masks = self.net.forward(OUTPUTS)
        except cv2.error as e:
            raise FatalError(
                f"Mask R-CNN forward pass failed on a {w}x{h} frame (input {size[0]}x{size[1]}): "
                f"{str(e).strip().splitlines()[-1][:200]}; check the model files {self.files}"
            ) from e
        self.last_rows = int(detections.reshape(-1, 7).shape[0])
        o = self.options
        previous = self.last_main if self.last_size == (w, h) else None  # other size: afresh
        seg = parse_detections(
            detections, masks, w, h, o.confidence, o.mask_threshold, o.people, previous
        )
        if o.people == "main":
            self.last_main = seg.people[0].box if seg.people else None
            self.last_size = (w, h)
        return seg


def open(model_dir: Path | None, options: SegmenterOptions) -> MaskRCNN:  # noqa: A001
    """Resolve the files (see ``models.store``), load the net with the options' knobs."""
    from models import store

    if options.people not in ("main", "all"):
        raise FatalError(f'people must be "main" or "all", got {options.people!r}')
    if options.proposals < 1:
        raise FatalError(f"proposals must be >= 1, got {options.proposals}")
    files = store.resolve(NAME, model_dir)
    if options.threads > 0:
        cv2.setNumThreads(options.threads)
    net = load_net(files["weights"], files["graph"], options.proposals)
    return MaskRCNN(net=net, options=options, files=files)

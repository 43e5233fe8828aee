"""Segmenters: Mask R-CNN output parsing, text-graph rewrite, loading real files, selfie quality.

Why these tests: the parsing rules (person only, confidence, edge clipping without squashing the
mask, the main person rather than the sharpest bystander, soft masks) are where the tutorial code
goes wrong, so they are checked on synthetic outputs of the real shapes; loading and the proposals
knob are checked on the real random-weights stand-in graph; quality is measured on real labelled
photos with the real selfie model.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.errors import FatalError
from inference.segmenter import SegmenterOptions, open_segmenter
from inference.segmenters.maskrcnn import parse_detections, rewrite_keep_top_k, soft_mask
from inference.segmenters.selfie import pick_variant
from tests.conftest import MEDIA, MODELS, SELFIE, SITTING, STANDIN

W, H = 640, 480
PBTXT = MODELS / "mask-rcnn-coco" / "mask_rcnn_inception_v2_coco_2018_01_28.pbtxt"
GT = MEDIA / "gt_images"
KEEP_TOP_K = re.compile(r'key:\s*"keep_top_k"\s*value\s*\{\s*i:\s*(\d+)')


def outputs(rows: list[tuple[int, float, float, float, float, float]], masks: list[np.ndarray]):
    """Synthetic forward outputs: (1,1,N,7) detections and (N,90,15,15) masks (person = class 0)."""
    det = np.zeros((1, 1, len(rows), 7), np.float32)
    for i, (cls, score, left, top, right, bottom) in enumerate(rows):
        det[0, 0, i] = [0, cls, score, left, top, right, bottom]
    m = np.zeros((len(rows), 90, 15, 15), np.float32)
    for i, mask in enumerate(masks):
        m[i, rows[i][0]] = mask
    return det, m


def blob15() -> np.ndarray:
    """A smooth person-like 15x15 probability blob (1 at the centre, ~0 at the border)."""
    yy, xx = np.mgrid[0:15, 0:15].astype(np.float32)
    return np.exp(-((xx - 7) ** 2 + (yy - 7) ** 2) / (2 * 3.5**2))


def test_non_person_and_low_score_dropped() -> None:
    full = np.ones((15, 15), np.float32)
    det, m = outputs([(2, 0.99, 0.1, 0.1, 0.5, 0.9), (0, 0.4, 0.5, 0.1, 0.9, 0.9)], [full, full])
    seg = parse_detections(det, m, W, H, confidence=0.5)
    assert seg.people == ()
    assert seg.mask.shape == (H, W) and seg.mask.dtype == np.uint8
    assert seg.mask.max() == 0
    # the same low-score person is kept once the confidence allows it
    seg = parse_detections(det, m, W, H, confidence=0.3)
    assert len(seg.people) == 1 and seg.people[0].score == pytest.approx(0.4)
    assert seg.mask[240, 450] > 200 and seg.mask[240, 200] == 0


def test_edge_box_clipped_and_mask_not_squashed() -> None:
    # Box from x = -160 to 160 px: only its right half is in the frame. The mask is 1 on the right
    # half of its 15x15 grid, so in the frame it must cover x = 0..160, not just 80..160 (squashed).
    right_half = np.zeros((15, 15), np.float32)
    right_half[:, 8:] = 1.0
    det, m = outputs([(0, 0.9, -0.25, 0.1, 0.25, 0.9)], [right_half])
    seg = parse_detections(det, m, W, H)
    (person,) = seg.people
    x0, y0, x1, y1 = person.box
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    assert person.box == (0, 48, 160, 432)
    mid = (y0 + y1) // 2
    assert seg.mask[mid, 20] >= 200, "mask squashed into the clipped box"
    assert seg.mask[mid, 150] >= 200
    assert seg.mask[mid, 170:].max() == 0
    assert seg.mask[:40].max() == 0 and seg.mask[440:].max() == 0


def test_main_person_beats_sharp_small_bystander() -> None:
    blob = blob15()
    rows = [(0, 0.99, 0.90, 0.05, 0.98, 0.25), (0, 0.70, 0.25, 0.10, 0.75, 1.0)]
    det, m = outputs(rows, [blob, blob])
    seg = parse_detections(det, m, W, H, people="main")
    (person,) = seg.people
    assert person.score == pytest.approx(0.70), "picked the highest score, not the main person"
    assert seg.mask[int(0.55 * H), W // 2] > 200  # the central person
    assert seg.mask[: int(0.25 * H) + 1, int(0.9 * W) :].max() == 0  # no bystander

    seg = parse_detections(det, m, W, H, people="all")
    assert [p.score for p in seg.people] == pytest.approx([0.99, 0.70])
    assert seg.mask[int(0.55 * H), W // 2] > 200
    assert seg.mask[int(0.15 * H), int(0.94 * W)] > 200  # the bystander's centre too

    with pytest.raises(FatalError):
        parse_detections(det, m, W, H, people="everyone")


def test_mask_is_soft_and_threshold_maps_to_127() -> None:
    det, m = outputs([(0, 0.9, 0.2, 0.1, 0.8, 0.9)], [blob15()])
    seg = parse_detections(det, m, W, H)
    x0, y0, x1, y1 = seg.people[0].box
    row = seg.mask[(y0 + y1) // 2, x0:x1]
    # bilinear on the float probabilities: a long ramp; nearest or thresholded: <= 15 levels
    assert len(np.unique(row)) > 20
    assert np.all(np.abs(np.diff(row.astype(int))) <= 16), "15x15 staircase steps"

    const = np.full((15, 15), 0.3, np.float32)
    det, m = outputs([(0, 0.9, 0.2, 0.1, 0.8, 0.9)], [const])
    seg = parse_detections(det, m, W, H, mask_threshold=0.3)
    inside = seg.mask[100:400, 150:500]
    assert abs(int(np.median(inside)) - 127) <= 1
    assert soft_mask(np.array([0.0, 0.3, 1.0]), 0.3).tolist() == [0, 127, 255]
    assert soft_mask(np.array([0.5]), 0.5)[0] == 127
    # monotone: a higher probability never gives a lower value
    ramp = soft_mask(np.linspace(0, 1, 1001), 0.3).astype(int)
    assert np.all(np.diff(ramp) >= 0)


def test_rewrite_keep_top_k_on_real_pbtxt() -> None:
    text = PBTXT.read_text(encoding="utf-8")
    assert KEEP_TOP_K.findall(text) == ["100", "100"]
    out = rewrite_keep_top_k(text, 7)
    assert KEEP_TOP_K.findall(out) == ["7", "7"]
    assert len(out) == len(text) - 4  # nothing else touched
    with pytest.raises(ValueError):
        rewrite_keep_top_k("node { name: 'x' }\ngarbage garbage", 7)
    first_only = text[: KEEP_TOP_K.search(text).end() + 1]
    with pytest.raises(ValueError):
        rewrite_keep_top_k(first_only, 7)
    with pytest.raises(ValueError):
        rewrite_keep_top_k(text, 0)


def video_frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(SITTING))
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot read {SITTING}"
    return frame


@pytest.mark.parametrize("proposals", [10, 100])
def test_standin_loads_and_honours_proposals(proposals: int) -> None:
    if not (STANDIN / "frozen_inference_graph.pb").is_file():
        pytest.skip(f"{STANDIN} missing")
    seg = open_segmenter("maskrcnn", STANDIN, SegmenterOptions(proposals=proposals, threads=2))
    frame = video_frame()
    out = seg.segment(frame)
    assert seg.last_rows == proposals
    assert out.mask.dtype == np.uint8 and out.mask.shape == frame.shape[:2]
    for p in out.people:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= frame.shape[1] and 0 <= y0 < y1 <= frame.shape[0]


def test_corrupt_and_missing_model_files(tmp_path: Path) -> None:
    bad = tmp_path / "maskrcnn"
    bad.mkdir()
    (bad / "frozen_inference_graph.pb").write_bytes(np.random.default_rng(1).bytes(200_000))
    shutil.copy(PBTXT, bad / PBTXT.name)
    with pytest.raises(FatalError, match="frozen_inference_graph.pb"):
        open_segmenter("maskrcnn", bad)

    tfl = tmp_path / "selfie"
    tfl.mkdir()
    for name in ("selfie_segmentation.tflite", "selfie_segmentation_landscape.tflite"):
        (tfl / name).write_bytes(b"TFL3 not a model " * 1000)
    with pytest.raises(FatalError, match="selfie_segmentation.tflite"):
        open_segmenter("selfie", tfl)

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(PBTXT, empty / PBTXT.name)
    with pytest.raises(FatalError, match="frozen_inference_graph.pb"):
        open_segmenter("maskrcnn", empty)
    with pytest.raises(FatalError, match="selfie_segmentation"):
        open_segmenter("selfie", empty)
    with pytest.raises(FatalError, match="unknown model"):
        open_segmenter("nosuchmodel", empty)


def gt_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for img in sorted(GT.iterdir()):
        if img.stem.endswith(("_mask", "_parsing_orig")) or img.suffix not in (".jpg", ".png"):
            continue
        pairs.append((img, GT / f"{img.stem}_mask.png"))
    return pairs


@pytest.fixture(scope="module")
def selfie():
    return open_segmenter("selfie", SELFIE)


def test_selfie_iou_on_gt_images(selfie) -> None:
    pairs = [p for p in gt_pairs() if p[0].stem != "voc_noperson_23"]
    assert len(pairs) == 16
    ious = []
    for img_path, mask_path in pairs:
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        gt = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) >= 128
        pred = selfie.segment(img).mask
        assert pred.shape == gt.shape and pred.dtype == np.uint8
        pred = pred >= 128
        union = np.logical_or(pred, gt).sum()
        ious.append(np.logical_and(pred, gt).sum() / union)
        print(f"{img_path.name}: IoU {ious[-1]:.3f}")
    mean = float(np.mean(ious))
    print(f"selfie mean IoU over {len(ious)} gt_images: {mean:.3f}")
    assert mean >= 0.77  # measured 0.790 (opencv 5.0.0, stretch fit); a regression drops below


def test_selfie_no_person_background_stays_empty(selfie) -> None:
    """voc_noperson_23 is a close-up lamb on grass: no person in the ground truth.

    Measured: the selfie model keeps the lamb (~28 % of pixels >= 128): it segments the salient
    close foreground subject, not "persons" (a model limitation, documented here, not a parsing
    bug). What must hold is that the grass and fence around it stay background, and that the
    false-positive area does not grow.
    """
    img = cv2.imread(str(GT / "voc_noperson_23.png"), cv2.IMREAD_COLOR)
    fg = selfie.segment(img).mask >= 128
    frac = float(fg.mean())
    h, w = fg.shape
    border = float(np.concatenate([fg[:, : w // 8].ravel(), fg[:, -w // 8 :].ravel()]).mean())
    print(f"voc_noperson_23: {frac:.2%} of pixels >= 128, {border:.2%} of the side strips")
    assert frac < 0.31  # measured 28.4 %: the lamb
    assert border < 0.02


def test_pick_variant() -> None:
    assert pick_variant(1280, 720) == "landscape"
    assert pick_variant(640, 480) == "square"
    assert pick_variant(480, 640) == "square"
    assert pick_variant(640, 480, "landscape") == "landscape"
    with pytest.raises(FatalError):
        pick_variant(640, 480, "wide")

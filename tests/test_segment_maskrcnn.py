"""Mask R-CNN: output parsing on synthetic forward() outputs, and the real graph via the stand-in.

The stand-in has random weights: it is used for loading, shapes and the proposals knob only, never
for mask quality.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.errors import FatalError
from inference.segmenter import Person, SegmenterOptions, open_segmenter
from inference.segmenters import maskrcnn

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STANDIN = SHARED / "models" / "mask-rcnn-standin"
needs_standin = pytest.mark.skipif(
    not (STANDIN / "frozen_inference_graph.pb").is_file(), reason=f"no stand-in model at {STANDIN}"
)


def outputs(rows: list[tuple[int, float, float, float, float, float]], masks: list[np.ndarray]):
    """Arrays shaped like forward()'s: (1, 1, N, 7) detections and (N, 90, 15, 15) masks."""
    det = np.zeros((1, 1, len(rows), 7), np.float32)
    for i, (cls, score, x0, y0, x1, y1) in enumerate(rows):
        det[0, 0, i] = (0, cls, score, x0, y0, x1, y1)
    m = np.zeros((len(rows), 90, 15, 15), np.float32)
    for i, mask in enumerate(masks):
        m[i, rows[i][0]] = mask
    return det, m


FULL = np.ones((15, 15), np.float32)


def test_only_persons_above_confidence_are_kept() -> None:
    det, m = outputs(
        [
            (0, 0.9, 0.1, 0.1, 0.4, 0.9),  # person
            (2, 0.99, 0.5, 0.1, 0.9, 0.9),  # car
            (0, 0.4, 0.6, 0.1, 0.9, 0.9),  # person below confidence
        ],
        [FULL, FULL, FULL],
    )
    seg = maskrcnn.parse_detections(det, m, 200, 100, confidence=0.5, people="all")
    assert [p.score for p in seg.people] == [pytest.approx(0.9)]
    assert seg.mask.shape == (100, 200) and seg.mask.dtype == np.uint8
    assert seg.mask[50, 50] == 255
    assert seg.mask[50, 150] == 0  # car and low-score person left out
    seg = maskrcnn.parse_detections(det, m, 200, 100, confidence=0.3, people="all")
    assert len(seg.people) == 2 and seg.mask[50, 150] == 255


def test_no_detection_gives_empty_mask() -> None:
    det = np.zeros((1, 1, 1, 7), np.float32)  # what DetectionOutput returns when nothing is kept
    seg = maskrcnn.parse_detections(det, np.zeros((1, 90, 15, 15), np.float32), 64, 48)
    assert seg.people == () and not seg.mask.any()


def test_boxes_are_clipped_and_masks_stay_aligned_at_the_edge() -> None:
    # A person half outside the left edge: box -0.5..0.5 of the width. The mask is 1 on its
    # right half only, so inside the frame the whole visible part must be person.
    half = np.zeros((15, 15), np.float32)
    half[:, 8:] = 1.0
    det, m = outputs([(0, 0.9, -0.5, 0.0, 0.5, 1.2)], [half])
    seg = maskrcnn.parse_detections(det, m, 100, 50, people="all")
    assert seg.people[0].box == (0, 0, 50, 50)
    assert seg.mask[:, 10:45].min() == 255  # squashing into the clipped box would leave this 0
    assert not seg.mask[:, 55:].any()


def test_soft_mask_maps_threshold_to_127_and_is_monotone() -> None:
    p = np.linspace(0, 1, 101)
    out = maskrcnn.soft_mask(p, 0.3)
    assert out[0] == 0 and out[-1] == 255 and out[30] == 127
    assert np.all(np.diff(out.astype(int)) >= 0)
    assert maskrcnn.soft_mask(np.array([0.6]), 0.6)[0] == 127


def test_resize_into_box_is_smooth_not_blocky() -> None:
    ramp = np.tile(np.linspace(0, 1, 15, dtype=np.float32), (15, 1))
    det, m = outputs([(0, 0.9, 0.0, 0.0, 1.0, 1.0)], [ramp])
    seg = maskrcnn.parse_detections(det, m, 300, 300, people="all")
    row = seg.mask[150].astype(int)
    # Nearest-neighbour would give 15 plateaus of 20 px; bilinear gives many distinct values and
    # no step larger than a few levels.
    assert len(np.unique(row)) > 100
    assert np.abs(np.diff(row)).max() <= 6


def test_main_person_beats_a_brighter_bystander() -> None:
    big_central = Person(box=(180, 60, 460, 360), score=0.72)
    small_edge = Person(box=(590, 20, 635, 110), score=0.99)
    w, h = 640, 360
    assert max([big_central, small_edge], key=lambda p: p.score) is small_edge  # tutorial's pick
    assert maskrcnn.pick_main([small_edge, big_central], w, h) == 1
    assert maskrcnn.pick_main([big_central, small_edge], w, h) == 0


def test_main_person_prefers_the_central_one_of_equal_size() -> None:
    left = Person(box=(0, 100, 160, 360), score=0.95)
    centre = Person(box=(240, 100, 400, 360), score=0.90)
    assert maskrcnn.pick_main([left, centre], 640, 360) == 1


def test_main_person_stays_the_same_between_frames_of_two_similar_people() -> None:
    # Two people of nearly the same size and score: without memory the pick follows noise.
    a = Person(box=(60, 60, 300, 360), score=0.93)
    b = Person(box=(340, 60, 580, 360), score=0.95)
    assert maskrcnn.pick_main([a, b], 640, 360) == 1
    moved_a = (70, 62, 310, 360)  # last frame's main person was a, slightly elsewhere
    assert maskrcnn.pick_main([a, b], 640, 360, previous=moved_a) == 0
    # ... but someone who really takes over the frame still wins
    big = Person(box=(100, 0, 560, 360), score=0.95)
    assert maskrcnn.pick_main([a, big], 640, 360, previous=moved_a) == 1


@needs_standin
def test_segmenter_remembers_its_main_person_per_frame_size() -> None:
    seg = open_segmenter("maskrcnn", STANDIN, SegmenterOptions(proposals=10))
    frame = np.random.default_rng(3).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    out = seg.segment(frame)
    assert seg.last_size == (640, 360)
    assert seg.last_main == (out.people[0].box if out.people else None)


def test_main_person_size_wins_over_small_central() -> None:
    # A big person leaning to one side vs a small person far behind in the middle.
    big_side = Person(box=(20, 40, 340, 360), score=0.85)
    small_centre = Person(box=(300, 150, 340, 230), score=0.95)
    assert maskrcnn.pick_main([small_centre, big_side], 640, 360) == 1


def test_people_main_masks_only_the_main_person() -> None:
    det, m = outputs([(0, 0.99, 0.92, 0.05, 0.99, 0.3), (0, 0.7, 0.3, 0.2, 0.7, 1.0)], [FULL, FULL])
    seg = maskrcnn.parse_detections(det, m, 640, 360, people="main")
    assert len(seg.people) == 1 and seg.people[0].score == pytest.approx(0.7)
    assert seg.mask[200, 320] == 255 and seg.mask[50, 610] == 0
    seg_all = maskrcnn.parse_detections(det, m, 640, 360, people="all")
    assert [p.score for p in seg_all.people] == [pytest.approx(0.99), pytest.approx(0.7)]
    assert seg_all.mask[200, 320] == 255 and seg_all.mask[50, 610] == 255


def test_all_is_the_pixelwise_max_of_overlapping_masks() -> None:
    a = np.full((15, 15), 0.2, np.float32)
    b = np.full((15, 15), 0.9, np.float32)
    det, m = outputs([(0, 0.9, 0.0, 0.0, 1.0, 1.0), (0, 0.8, 0.0, 0.0, 1.0, 1.0)], [a, b])
    seg = maskrcnn.parse_detections(det, m, 40, 40, mask_threshold=0.3, people="all")
    assert seg.mask[20, 20] == maskrcnn.soft_mask(np.array([0.9]), 0.3)[0]


def test_rewrite_keep_top_k_changes_both_and_rejects_other_graphs() -> None:
    text = SHARED / "models" / "mask-rcnn-coco" / "mask_rcnn_inception_v2_coco_2018_01_28.pbtxt"
    if not text.is_file():
        pytest.skip(f"no text graph at {text}")
    src = text.read_text()
    out = maskrcnn.rewrite_keep_top_k(src, 17)
    assert len(maskrcnn._KEEP_TOP_K.findall(out)) == 2
    assert {v for _, v in maskrcnn._KEEP_TOP_K.findall(out)} == {"17"}
    with pytest.raises(ValueError):
        maskrcnn.rewrite_keep_top_k("node { name: 'x' }", 10)


def test_blob_size_keeps_aspect() -> None:
    assert maskrcnn.blob_size(640, 360, 0) == (640, 360)
    assert maskrcnn.blob_size(640, 360, 320) == (320, 180)
    assert maskrcnn.blob_size(360, 640, 400) == (225, 400)


@needs_standin
def test_standin_runs_through_open_segmenter_with_proposals() -> None:
    frame = cv2.imread(str(SHARED / "media" / "gt_images" / "hsd_003.jpg"))
    seg_10 = open_segmenter("maskrcnn", STANDIN, SegmenterOptions(proposals=10, people="all"))
    out = seg_10.segment(frame)
    assert out.mask.shape == frame.shape[:2] and out.mask.dtype == np.uint8
    assert 0 < seg_10.last_rows <= 10  # the graph itself kept at most 10 (random weights fill it)
    assert len(out.people) <= 10
    for p in out.people:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= frame.shape[1] and 0 <= y0 < y1 <= frame.shape[0]
    seg_main = open_segmenter("maskrcnn", STANDIN, SegmenterOptions(proposals=20, input_size=160))
    main = seg_main.segment(frame)
    assert seg_main.last_rows <= 20 and len(main.people) <= 1


@needs_standin
def test_standin_as_shipped_keeps_100() -> None:
    seg = open_segmenter("maskrcnn", STANDIN, SegmenterOptions(people="all", input_size=200))
    seg.segment(cv2.imread(str(SHARED / "media" / "gt_images" / "hsd_003.jpg")))
    assert 20 < seg.last_rows <= 100


@needs_standin
def test_corrupt_weights_are_a_fatal_error(tmp_path: Path) -> None:
    for f in STANDIN.iterdir():
        if f.suffix != ".pb":
            shutil.copy(f, tmp_path / f.name)
    data = (STANDIN / "frozen_inference_graph.pb").read_bytes()
    (tmp_path / "frozen_inference_graph.pb").write_bytes(data[: len(data) // 3])
    with pytest.raises(FatalError, match="frozen_inference_graph.pb"):
        open_segmenter("maskrcnn", tmp_path, SegmenterOptions(proposals=10))


@needs_standin
def test_missing_file_in_model_dir_is_a_fatal_error(tmp_path: Path) -> None:
    shutil.copy(STANDIN / "mask_rcnn_inception_v2_coco_2018_01_28.pbtxt", tmp_path)
    with pytest.raises(FatalError, match="lacks frozen_inference_graph.pb"):
        open_segmenter("maskrcnn", tmp_path, SegmenterOptions(proposals=10))


def test_bad_people_option_is_a_fatal_error() -> None:
    with pytest.raises(FatalError, match="people"):
        open_segmenter("maskrcnn", STANDIN, SegmenterOptions(people="everyone"))

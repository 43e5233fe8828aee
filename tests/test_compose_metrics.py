"""bench/metrics.py on synthetic shapes: the numbers the quality tables rest on."""

from __future__ import annotations

import cv2
import numpy as np

from bench.bench_motion import checks
from bench.metrics import agreement, boundary, boundary_f, fragments, iou


def square(x0: int, size: int = 40, shape: tuple[int, int] = (100, 100)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[30 : 30 + size, x0 : x0 + size] = 255
    return m


def test_iou_of_shifted_squares_is_the_overlap_ratio():
    a, b = square(20), square(30)  # 40x40 each, overlap 30x40
    assert iou(a, a) == 1.0
    assert abs(iou(a, b) - (30 * 40) / (2 * 40 * 40 - 30 * 40)) < 1e-9
    assert iou(a, np.zeros_like(a)) == 0.0


def test_empty_prediction_and_empty_gt_score_perfect():
    z = np.zeros((50, 50), np.uint8)
    assert iou(z, z) == 1.0 and boundary_f(z, z) == 1.0
    assert boundary_f(z, square(5, 20, (50, 50))) == 0.0


def test_agreement_splits_the_disagreement_into_room_shown_and_person_blurred():
    applied, ref = square(20) > 0, square(30) > 0  # applied lies 10 px left of the reference
    got_iou, room, blurred = agreement(applied, ref)
    assert abs(got_iou - iou(applied, ref)) < 1e-12
    assert room == blurred == 10 * 40 / applied.size  # the strip each has alone
    wider = square(20, 50) > 0  # covers the reference and more: shows room, blurs nothing
    _, room, blurred = agreement(wider, ref)
    assert room > 0 and blurred == 0
    z = np.zeros((100, 100), bool)
    assert agreement(z, z) == (1.0, 0.0, 0.0)


def test_alpha_is_thresholded_at_128():
    gt = square(20)
    soft = (gt > 0).astype(np.uint8) * 128
    assert iou(soft, gt) == 1.0
    assert iou(soft - 1, gt) == 0.0


def test_boundary_f_tolerates_2px_but_not_4px():
    gt = square(30)
    assert boundary_f(square(30), gt) == 1.0
    assert boundary_f(square(32), gt) == 1.0  # every contour pixel within 2 px
    shifted4 = boundary_f(square(34), gt)
    assert shifted4 < 0.7  # left/right edges now 4 px off: only top/bottom runs still match
    assert boundary_f(square(32), gt, tolerance=1) < 1.0


def test_boundary_is_one_pixel_thick_and_ignores_the_frame_edge():
    m = np.zeros((60, 60), bool)
    m[:, :30] = True  # touches the left, top and bottom frame border
    b = boundary(m)
    assert b.sum() == 60 and b[:, 29].all()  # only the inner edge at x = 29


def test_boundary_f_rewards_a_better_edge_where_iou_barely_moves():
    gt = np.zeros((200, 200), np.uint8)
    cv2.circle(gt, (100, 100), 70, 255, -1)
    rough = gt.copy()
    rng = np.random.default_rng(0)
    for _ in range(60):  # dents and bumps of 3-4 px along the contour
        ang = rng.uniform(0, 2 * np.pi)
        c = (int(100 + 70 * np.cos(ang)), int(100 + 70 * np.sin(ang)))
        cv2.circle(rough, c, 4, int(rng.integers(0, 2)) * 255, -1)
    i, f = iou(rough, gt), boundary_f(rough, gt)
    assert i > 0.9
    assert 1 - f > 2 * (1 - i), (i, f)  # the contour metric sees the edge damage far more


def test_fragments_count_small_islands_and_holes_not_the_body():
    m = np.zeros((200, 200), np.uint8)
    m[40:160, 60:140] = 255  # the body: one large region, the background another
    assert fragments(m) == 0
    m[5:8, 5:8] = 255  # two specks of "person" in the room ...
    m[190:192, 20:23] = 255
    m[100:103, 100:103] = 0  # ... and a hole of room in the body
    assert fragments(m) == 3
    assert fragments(m, max_share=0.0001) == 0  # each is 6-9 px: above 4 px


def test_motion_bench_checks_name_each_missed_acceptance_check():
    off = {"room_mean": 0.9, "iou": 0.5, "blurred": 1.0}
    assert checks(off, {"room_mean": 0.29, "iou": 0.5, "blurred": 1.0}) == "pass"
    worse = {"room_mean": 0.31, "iou": 0.49, "blurred": 1.01}
    assert checks(off, worse) == "miss: room IoU blurred"
    assert checks(off, {"room_mean": 0.1, "iou": 0.6, "blurred": 1.2}) == "miss: blurred"

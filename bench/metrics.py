"""Segmentation quality metrics: region IoU and DAVIS-style boundary F-measure.

Why both: IoU is dominated by the bulk of the body and barely moves when edges get better; the
boundary F-measure (Perazzi et al., DAVIS 2016) scores only the contour, with a small distance
tolerance, which is exactly what edge refinement is meant to improve.
"""

from __future__ import annotations

import cv2
import numpy as np

THRESHOLD = 128  # alpha >= 128 counts as person


def binarize(alpha: np.ndarray) -> np.ndarray:
    """uint8 alpha or 0/255 mask (HxW or HxWx3) -> bool person mask."""
    if alpha.ndim == 3:
        alpha = alpha[..., 0]
    if alpha.dtype == bool:
        return alpha
    return alpha >= THRESHOLD


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two masks; both empty counts as a perfect 1.0."""
    p, g = binarize(pred), binarize(gt)
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return np.count_nonzero(p & g) / union


def agreement(applied: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """IoU, room shown and person blurred (shares of the frame, 0..1) of two bool masks.

    One definition for every motion benchmark (bench_motion.py, motion_lab.py), so their tables
    can be compared: room shown is the applied mask's person where the reference says room (the
    privacy failure), person blurred the reverse; IoU of two empty masks is 1.0, as in ``iou``.
    """
    union = np.count_nonzero(applied | ref)
    both = np.count_nonzero(applied & ref)
    room = (np.count_nonzero(applied) - both) / applied.size
    blurred = (np.count_nonzero(ref) - both) / applied.size
    return (both / union if union else 1.0), room, blurred


def checks(off: dict, on: dict) -> str:
    """Issue 9's acceptance for one clip and interval, of two ``summary`` dicts (no motion,
    motion): "pass", or "miss:" and the checks missed, of "room" (room shown at most a third of
    no motion's), "IoU" (not lower), "blurred" (person blurred not higher). One rule for
    bench_motion.py and motion_lab.py --refined."""
    ok = (
        on["room_mean"] <= off["room_mean"] / 3,
        on["iou"] >= off["iou"],
        on["blurred"] <= off["blurred"],
    )
    missed = [n for n, good in zip(("room", "IoU", "blurred"), ok, strict=True) if not good]
    return "miss: " + " ".join(missed) if missed else "pass"


def summary(scores: np.ndarray) -> dict:
    """Issue 9's table of per-frame ``agreement`` rows (n, 3), of one run or several pooled
    (every frame weighs the same): frames, mean IoU, room shown mean and p99 and person blurred
    mean, in % of the frame. One summary for bench_motion.py's live runs and motion_lab.py
    --refined's phases."""
    if not len(scores):
        return {"frames": 0}
    return {
        "frames": len(scores),
        "iou": float(scores[:, 0].mean()),
        "room_mean": 100 * float(scores[:, 1].mean()),
        "room_p99": 100 * float(np.percentile(scores[:, 1], 99)),
        "blurred": 100 * float(scores[:, 2].mean()),
    }


def boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a bool mask (pixels with a 4-neighbour outside the mask).

    The frame border is not a boundary (cv2.erode pads with the maximum), as in DAVIS, where a
    person cut by the image edge has no contour there.
    """
    m = mask.astype(np.uint8)
    eroded = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    return (m - eroded).astype(bool)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: int = 2) -> float:
    """Boundary F-measure: precision/recall of contour pixels matched within ``tolerance`` px.

    Matching uses dilation by a disk of radius ``tolerance`` (the DAVIS approximation of a
    bipartite match). No contour in either mask: 1.0; a contour in only one of them: 0.0.
    """
    bp, bg = boundary(binarize(pred)), boundary(binarize(gt))
    n_p, n_g = np.count_nonzero(bp), np.count_nonzero(bg)
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    disk = _disk(tolerance)
    bg_d = cv2.dilate(bg.astype(np.uint8), disk).astype(bool)
    bp_d = cv2.dilate(bp.astype(np.uint8), disk).astype(bool)
    precision = np.count_nonzero(bp & bg_d) / n_p
    recall = np.count_nonzero(bg & bp_d) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def fragments(alpha: np.ndarray, max_share: float = 0.001) -> int:
    """Small pieces: islands of person and holes of background, each under ``max_share`` of the
    frame (8-connected).

    Why: IoU and boundary F barely see speckle (a few hundred scattered pixels), yet speckle is
    what the eye sees, and where the model is unsure it is sharp room in thin stripes. A clean
    mask has few; a ground truth's own count (hair strands, a gap between arm and body) is the
    reference.
    """
    person = binarize(alpha).astype(np.uint8)
    limit = max_share * person.size
    count = 0
    for region in (person, 1 - person):
        _, _, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
        count += int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] < limit))
    return count

"""The tutorial's single-process loop vs this pipeline, same clip, same model, one run.

The tutorial grabs a frame, runs Mask R-CNN, blurs, pastes and shows, one after the other, so the
picture moves at the model's rate. The pipeline shows every camera frame with the newest mask and
lets masks arrive when they arrive. Both run here one after the other on the same clip and model
(by default the Mask R-CNN stand-in: the real shapes and cost, random weights: timing only).

    python bench/bench_pipeline.py [--seconds 10] [--model-dir ../shared/models/mask-rcnn-standin]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import SHARED, STANDIN, describe, launch_stats  # noqa: E402

CLIP = SHARED / "media/videos/person_sitting_outdoors_pixabay35590.mp4"


def tutorial_loop(clip: Path, model_dir: Path, seconds: float) -> dict:
    """The tutorial's loop, faithfully: grab, Mask R-CNN, blur 41, paste the person, (show)."""
    pb = str(model_dir / "frozen_inference_graph.pb")
    pbtxt = str(model_dir / "mask_rcnn_inception_v2_coco_2018_01_28.pbtxt")
    if int(cv2.__version__.split(".")[0]) >= 5:
        net = cv2.dnn.readNetFromTensorflow(pb, pbtxt, cv2.dnn.ENGINE_CLASSIC)
    else:
        net = cv2.dnn.readNetFromTensorflow(pb, pbtxt)
    cap = cv2.VideoCapture(str(clip))
    latencies, shown = [], 0
    t_start = time.monotonic()
    while time.monotonic() - t_start < seconds:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        t_grab = time.monotonic()
        frame = cv2.resize(frame, (640, round(frame.shape[0] * 640 / frame.shape[1])))
        h, w = frame.shape[:2]
        net.setInput(cv2.dnn.blobFromImage(frame, swapRB=True, crop=False))
        boxes, masks = net.forward(["detection_out_final", "detection_masks"])
        blurred = cv2.GaussianBlur(frame, (41, 41), 0)
        out = blurred.copy()
        for i in range(boxes.shape[2]):
            class_id, score = int(boxes[0, 0, i, 1]), boxes[0, 0, i, 2]
            if class_id != 0 or score < 0.5:
                continue
            x0, y0, x1, y1 = (boxes[0, 0, i, 3:7] * np.array([w, h, w, h])).astype(int)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if x1 <= x0 or y1 <= y0:
                continue
            m = cv2.resize(masks[i, class_id], (x1 - x0, y1 - y0)) > 0.3
            out[y0:y1, x0:x1][m] = frame[y0:y1, x0:x1][m]
        shown += 1
        latencies.append((time.monotonic() - t_grab) * 1000)
    elapsed = time.monotonic() - t_start
    return {
        "display_fps": shown / elapsed,
        "e2e_p50": float(np.percentile(latencies, 50)),
        "e2e_p95": float(np.percentile(latencies, 95)),
        "mask_fps": shown / elapsed,
    }


def pipeline(clip: Path, model_dir: Path, seconds: float, extra: list[str]) -> dict:
    s = launch_stats(
        "--source",
        str(clip),
        "--loop",
        "--model",
        "maskrcnn",
        "--model-dir",
        str(model_dir),
        "--headless",
        "--max-frames",
        str(int(seconds * 30)),
        *extra,
        timeout=seconds * 10 + 60,
    )
    return {
        "display_fps": s["display_fps"],
        "capture_fps": s["capture_fps"],
        "e2e_p50": s["e2e_latency_ms"]["p50"],
        "e2e_p95": s["e2e_latency_ms"]["p95"],
        "mask_fps": s["inference_fps"],
        "mask_age_p50": s["mask_age_ms"]["p50"],
        "fail_closed": s["fail_closed_frames"],
        "hidden_by": s["stages"]["compositor"].get("fail_closed_by_reason", {}),
        "frames": s["frames_displayed"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--model-dir", type=Path, default=STANDIN)
    a = p.parse_args()
    print(f"machine: {describe()}")
    print(f"clip: {a.clip.name}, model: Mask R-CNN from {a.model_dir} (stand-in = timing only)")
    tut = tutorial_loop(a.clip, a.model_dir, a.seconds)
    ours = pipeline(a.clip, a.model_dir, a.seconds, [])
    print(f"\n{'':28}{'tutorial loop':>15}{'pipeline':>12}{'ratio':>9}")
    rows = [
        ("display rate (frames/s)", "display_fps", "{:.1f}"),
        ("latency p50 (ms)", "e2e_p50", "{:.0f}"),
        ("latency p95 (ms)", "e2e_p95", "{:.0f}"),
        ("masks per second", "mask_fps", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        ratio = ours[key] / tut[key] if tut[key] else float("nan")
        print(f"{label:28}{fmt.format(tut[key]):>15}{fmt.format(ours[key]):>12}{ratio:>8.2f}x")
    print(
        f"\npipeline: capture {ours['capture_fps']:.1f} fps, display/capture "
        f"{ours['display_fps'] / ours['capture_fps']:.3f}, mask age p50 "
        f"{ours['mask_age_p50']:.0f} ms, {ours['fail_closed']} of {ours['frames']} frames hidden "
        f"(by reason: {ours['hidden_by']}; 'waiting' is before the first mask)"
    )


if __name__ == "__main__":
    main()

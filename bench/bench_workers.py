"""Remote-worker numbers: mask rate with 1 and 2 workers, and bytes per frame on the wire.

Mask rate: the real pipeline with the Mask R-CNN stand-in (a model slower than the camera), each
worker pinned to one OpenCV thread so 1 vs 2 workers is a fair comparison on a 2-core machine.
Bandwidth: what the wire protocol puts on the network for one frame, raw vs JPEG, at two sizes,
and for the mask that travels back (PNG).

    python bench/bench_workers.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import describe, launch_stats  # noqa: E402
from common import protocol  # noqa: E402

SHARED = REPO.parent / "shared"
CLIPS = {
    "640x360": SHARED / "media/videos/person_sitting_outdoors_pixabay35590.mp4",
    "1280x720": SHARED / "media/videos/person_juggling_ball_sam2.mp4",
}
STANDIN = SHARED / "models/mask-rcnn-standin"
SELFIE = SHARED / "models/selfie-segmentation"


def mask_rate(workers: int, seconds: float) -> dict:
    return launch_stats(
        "--source",
        str(CLIPS["640x360"]),
        "--loop",
        "--model",
        "maskrcnn",
        "--model-dir",
        str(STANDIN),
        "--proposals",
        "20",
        "--threads",
        "1",
        "--workers",
        str(workers),
        "--headless",
        "--max-frames",
        str(int(seconds * 30)),
        timeout=seconds * 10 + 60,
    )


def wire_bytes(clip: Path, width: int) -> dict:
    cap = cv2.VideoCapture(str(clip))
    sizes = {"raw": [], "jpeg85": [], "jpeg70": [], "mask_raw": [], "mask_png": []}
    from inference.segmenter import open_segmenter

    seg = open_segmenter("selfie", SELFIE)
    for _ in range(30):
        ok, frame = cap.read()
        if not ok:
            break
        if frame.shape[1] != width:
            frame = cv2.resize(frame, (width, round(frame.shape[0] * width / frame.shape[1])))
        for name, kw in (
            ("raw", {}),
            ("jpeg85", {"enc": "jpeg", "quality": 85}),
            ("jpeg70", {"enc": "jpeg", "quality": 70}),
        ):
            parts = protocol.encode(protocol.FRAME, frame, frame_id=0, ts=0.0, **kw)
            sizes[name].append(sum(len(bytes(p)) for p in parts))
        mask = seg.segment(frame).mask
        for name, enc in (("mask_raw", "raw"), ("mask_png", "png")):
            parts = protocol.encode(protocol.MASK, mask, enc=enc, frame_id=0, ts=0.0)
            sizes[name].append(sum(len(bytes(p)) for p in parts))
    return {k: float(np.mean(v)) for k, v in sizes.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    print(f"machine: {describe()}")
    print("\nmask rate, Mask R-CNN stand-in (--proposals 20, --threads 1 per worker), 640x360:")
    one, two = mask_rate(1, a.seconds), mask_rate(2, a.seconds)
    print(f"  1 worker : {one['inference_fps']:.2f} masks/s, display {one['display_fps']:.1f} fps")
    print(
        f"  2 workers: {two['inference_fps']:.2f} masks/s, display {two['display_fps']:.1f} fps"
        f"  ({two['masks_by_worker']})"
    )
    print(f"  ratio    : {two['inference_fps'] / one['inference_fps']:.2f}x")
    print("\nbytes per message on the wire (mean of 30 frames):")
    print(
        f"  {'size':10}{'raw':>10}{'jpeg q85':>10}{'jpeg q70':>10}{'ratio85':>9}"
        f"{'mask raw':>10}{'mask png':>10}"
    )
    for label, clip in CLIPS.items():
        b = wire_bytes(clip, int(label.split("x")[0]))
        print(
            f"  {label:10}{b['raw']:>10.0f}{b['jpeg85']:>10.0f}{b['jpeg70']:>10.0f}"
            f"{b['raw'] / b['jpeg85']:>8.1f}x{b['mask_raw']:>10.0f}{b['mask_png']:>10.0f}"
        )


if __name__ == "__main__":
    main()

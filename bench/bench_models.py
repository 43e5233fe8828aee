"""Milliseconds per frame of each model and speed knob (median of several runs after a warm-up).

Mask R-CNN numbers come from the stand-in graph (real shapes and cost, random weights): they are
timing only, never quality. The selfie model is the real MediaPipe model.

    python bench/bench_models.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from inference.segmenter import SegmenterOptions, open_segmenter  # noqa: E402

SHARED = REPO.parent / "shared"
STANDIN = SHARED / "models/mask-rcnn-standin"
SELFIE = SHARED / "models/selfie-segmentation"
CLIP = SHARED / "media/videos/person_sitting_outdoors_pixabay35590.mp4"


def frame_640x360():
    cap = cv2.VideoCapture(str(CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 60)
    ok, frame = cap.read()
    if not ok:
        raise SystemExit(f"cannot read {CLIP}")
    return frame


def time_model(model: str, model_dir: Path, options: SegmenterOptions, frame, runs: int) -> float:
    cv2.setNumThreads(options.threads or cv2.getNumberOfCPUs())
    seg = open_segmenter(model, model_dir, options)
    seg.segment(frame)  # warm-up: first forward allocates
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        seg.segment(frame)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    frame = frame_640x360()
    print(f"machine: {describe()}")
    print(f"frame: 640x360 ({CLIP.name}); median of {a.runs} runs after one warm-up\n")
    rows = [
        ("selfie", SELFIE, SegmenterOptions(selfie_variant="square", threads=2), "square 256x256"),
        (
            "selfie",
            SELFIE,
            SegmenterOptions(selfie_variant="landscape", threads=2),
            "landscape 144x256",
        ),
        (
            "selfie",
            SELFIE,
            SegmenterOptions(selfie_variant="landscape", threads=1),
            "landscape, 1 thread",
        ),
    ]
    for proposals in (100, 50, 20, 10):
        rows.append(
            (
                "maskrcnn",
                STANDIN,
                SegmenterOptions(proposals=proposals, threads=2),
                f"proposals {proposals}, input 640 (frame), 2 threads",
            )
        )
    for size in (480, 320):
        rows.append(
            (
                "maskrcnn",
                STANDIN,
                SegmenterOptions(proposals=100, input_size=size, threads=2),
                f"proposals 100, input {size}, 2 threads",
            )
        )
    rows.append(
        (
            "maskrcnn",
            STANDIN,
            SegmenterOptions(proposals=100, threads=1),
            "proposals 100, input 640, 1 thread",
        )
    )
    rows.append(
        (
            "maskrcnn",
            STANDIN,
            SegmenterOptions(proposals=20, threads=1),
            "proposals 20, input 640, 1 thread",
        )
    )
    print("| model | setting | ms/frame |\n|---|---|---|")
    for model, model_dir, options, label in rows:
        ms = time_model(model, model_dir, options, frame, a.runs)
        note = " (stand-in: timing only)" if model == "maskrcnn" else ""
        print(f"| {model}{note} | {label} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()

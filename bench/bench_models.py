"""Per-frame cost of each segmentation model and knob, plus the selfie input-fit comparison.

Why: the knobs (proposals, input size, threads, selfie build) trade speed for quality, and the
numbers differ a lot between machines, so they are measured side by side in one run and printed
as a markdown table (copied into docs/models.md) with the machine described.

Mask R-CNN is timed with the RANDOM-WEIGHTS stand-in (same graph, same cost as the real model):
its rows are "timing only". Run: ``python bench/bench_models.py [--runs 5]`` (~2 minutes here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import SELFIE, SHARED, STANDIN, describe  # noqa: E402
from inference.segmenter import SegmenterOptions, open_segmenter  # noqa: E402
from inference.segmenters import selfie  # noqa: E402
from inference.segmenters.maskrcnn import blob_size  # noqa: E402

VIDEO = SHARED / "media" / "videos" / "person_sitting_outdoors_pixabay35590.mp4"


def first_frame() -> np.ndarray:
    """A real 640x360 camera-like frame (the first of a real clip)."""
    cap = cv2.VideoCapture(str(VIDEO))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read {VIDEO}")
    return frame


def time_ms(seg, frame: np.ndarray, runs: int) -> float:
    """Median ms per ``segment`` call after one warm-up call."""
    seg.segment(frame)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        seg.segment(frame)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def gt_sets() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """gt_images (person images only) and every 4th davis_hike frame, with binary masks."""
    gt = SHARED / "media" / "gt_images"
    images = []
    for m in sorted(gt.glob("*_mask.png")):
        stem = m.name[: -len("_mask.png")]
        img = next(p for p in (gt / f"{stem}.jpg", gt / f"{stem}.png") if p.is_file())
        mask = cv2.imread(str(m), 0) > 127
        if mask.any():
            images.append((cv2.imread(str(img)), mask))
    davis = SHARED / "media" / "gt_video" / "davis_hike"
    video = [
        (cv2.imread(str(f)), cv2.imread(str(davis / "masks" / f"{f.stem}.png"), 0) > 127)
        for f in sorted((davis / "frames").glob("*.jpg"))[::4]
    ]
    return {"gt_images": images, "davis_hike/4": video}


def selfie_fit_table() -> list[str]:
    """Mean IoU (mask > 127) of stretch vs letterbox for each build choice."""
    sets = gt_sets()
    rows = ["| selfie build | input fit | " + " | ".join(f"mean IoU {k}" for k in sets) + " |"]
    rows.append("|---|---|" + "---|" * len(sets))
    for variant in ("auto", "square", "landscape"):
        for fit in ("stretch", "letterbox"):
            seg = open_segmenter("selfie", SELFIE, SegmenterOptions(selfie_variant=variant))
            seg.fit = fit
            cells = []
            for pairs in sets.values():
                ious = []
                for img, gt in pairs:
                    pred = seg.segment(img).mask > 127
                    ious.append((pred & gt).sum() / (pred | gt).sum())
                cells.append(f"{np.mean(ious):.3f} (n={len(ious)})")
            rows.append(f"| {variant} | {fit} | " + " | ".join(cells) + " |")
    return rows


def main() -> int:
    """Run every configuration once and print markdown."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per configuration (median)")
    args = ap.parse_args()
    frame = first_frame()
    h, w = frame.shape[:2]
    default_threads = cv2.getNumThreads()
    print(f"Machine: {describe()}, numpy {np.__version__}")
    print(f"Frame: {w}x{h} (first frame of {VIDEO.name}); median of {args.runs} runs after warm-up")
    print()
    print("| model | knobs | input | ms/frame | vs baseline | note |")
    print("|---|---|---|---|---|---|")
    base = None
    for variant in ("square", "landscape"):
        seg = open_segmenter("selfie", SELFIE, SegmenterOptions(selfie_variant=variant))
        ms = time_ms(seg, frame, max(args.runs * 6, 30))
        base = base or ms
        in_w, in_h = selfie.INPUT_SIZES[variant]
        ratio = ms / base
        print(f"| selfie | {variant} | {in_w}x{in_h} | {ms:.1f} | {ratio:.2f}x | real weights |")
    configs = [
        ("proposals=100 (as shipped)", SegmenterOptions(proposals=100)),
        ("proposals=50", SegmenterOptions(proposals=50)),
        ("proposals=20", SegmenterOptions(proposals=20)),
        ("proposals=100, input_size=320", SegmenterOptions(proposals=100, input_size=320)),
        ("proposals=20, input_size=480", SegmenterOptions(proposals=20, input_size=480)),
        ("proposals=20, input_size=320", SegmenterOptions(proposals=20, input_size=320)),
        ("proposals=20, threads=1", SegmenterOptions(proposals=20, threads=1)),
        ("proposals=20, threads=2", SegmenterOptions(proposals=20, threads=2)),
    ]
    base = None
    for label, opts in configs:
        seg = open_segmenter("maskrcnn", STANDIN, opts)
        ms = time_ms(seg, frame, args.runs)
        cv2.setNumThreads(default_threads)
        base = base or ms
        bw, bh = blob_size(w, h, opts.input_size)
        note = "stand-in: timing only (random weights)"
        print(f"| maskrcnn | {label} | {bw}x{bh} | {ms:.0f} | {ms / base:.2f}x | {note} |")
    print()
    print("Selfie input fit (quality, real weights):")
    print()
    for row in selfie_fit_table():
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())

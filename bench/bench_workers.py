"""Remote-worker numbers: mask rate with 1 and 2 workers, and bytes per frame on the wire.

Mask rate: the real pipeline with the Mask R-CNN stand-in (a model slower than the camera), each
worker pinned to one OpenCV thread so 1 vs 2 workers is a fair comparison on a 2-core machine.
The runs alternate (1, 2, 1, 2, ... ``--rounds`` times) so that a change of load on the machine
during the benchmark hits both sides alike; the ratios are of the medians, measured side by side
in this one run, and the absolute numbers come with the machine they ran on. Two rates: masks
*received* (work the workers did) and masks *applied* (newest wins: an older mask arriving after
a newer one is dropped). This used to be a test (two workers > 1.25x the masks of one); timing is
a measurement here, the test only checks that both workers contribute.
Bandwidth: what the wire protocol puts on the network for one frame, raw vs JPEG, at two sizes,
and for the mask that travels back (PNG).

    python bench/bench_workers.py [--seconds 15] [--rounds 2] [--source stills|clip]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import SELFIE, SHARED, STANDIN, describe, launch_stats  # noqa: E402
from common import protocol  # noqa: E402

CLIPS = {
    "640x360": SHARED / "media/videos/person_sitting_outdoors_pixabay35590.mp4",
    "1280x720": SHARED / "media/videos/person_juggling_ball_sam2.mp4",
}
SOURCES = {
    # a looped folder of stills at 10 fps: the camera-rate stages leave the second core to the
    # second worker, so what is compared is the workers, not CPU contention (the old test's setup)
    "stills": ["--source", str(SHARED / "media/gt_video/davis_hike/frames"), "--fps", "10"],
    # the 640x360 clip at its 30 fps: what a call looks like
    "clip": ["--source", str(CLIPS["640x360"])],
}


def mask_rate(workers: int, seconds: float, source: str) -> dict:
    """One pipeline run; its merged stats plus masks received per second (the workers' work)."""
    fps = 10 if source == "stills" else 30
    s = launch_stats(
        *SOURCES[source],
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
        str(int(seconds * fps)),
        timeout=seconds * 10 + 60,
    )
    s["masks_received_fps"] = s["stages"]["compositor"]["masks_received_fps"]
    return s


def compare(seconds: float, rounds: int, source: str) -> None:
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(rounds):
        for n in (1, 2):
            s = mask_rate(n, seconds, source)
            runs[n].append(s)
            print(
                f"  round {r + 1}, {n} worker{'s' if n > 1 else ' '}: "
                f"received {s['masks_received_fps']:.2f}/s, applied {s['inference_fps']:.2f}/s, "
                f"display {s['display_fps']:.1f} fps, by worker {s['masks_by_worker']}"
            )
    med = {
        n: {
            k: statistics.median(s[k] for s in runs[n])
            for k in ("masks_received_fps", "inference_fps")
        }
        for n in runs
    }
    for key, label in (("masks_received_fps", "received"), ("inference_fps", "applied")):
        one, two = med[1][key], med[2][key]
        ratio = f"{two / one:.2f}x" if one else "n/a"
        print(f"  median {label:8}: 1 worker {one:.2f}/s, 2 workers {two:.2f}/s, ratio {ratio}")


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
            msg = protocol.Frame(frame_id=0, ts=0.0, image=frame)
            parts = protocol.encode(msg, **kw)
            sizes[name].append(sum(len(bytes(p)) for p in parts))
        mask = seg.segment(frame).mask
        for name, enc in (("mask_raw", "raw"), ("mask_png", "png")):
            parts = protocol.encode(protocol.Mask(frame_id=0, image=mask), enc=enc)
            sizes[name].append(sum(len(bytes(p)) for p in parts))
    return {k: float(np.mean(v)) for k, v in sizes.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0, help="per pipeline run")
    p.add_argument("--rounds", type=int, default=2, help="1-worker/2-worker run pairs")
    p.add_argument("--source", choices=sorted(SOURCES), default="stills")
    a = p.parse_args()
    print(f"machine: {describe()}")
    print(
        f"\nmask rate, Mask R-CNN stand-in (--proposals 20, --threads 1 per worker), "
        f"source {a.source}, {a.seconds:g} s per run:"
    )
    compare(a.seconds, a.rounds, a.source)
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

"""Compositor cost per frame: the tutorial's method vs ours, side by side, at three sizes.

Tutorial: full-resolution GaussianBlur (41, 41) and a binary paste of the person. Ours: what the
compositor does for every frame (``render``: guided refinement with this frame, halo-free blur at
reduced resolution, uint8 blend at full resolution); ``accept_mask`` runs once per mask, so it is
timed separately. Median of many frames after a warm-up, with 1 OpenCV thread and with the default.

    python bench/bench_composite.py [--frames 100]
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

from bench.harness import describe  # noqa: E402
from compositor import compose  # noqa: E402
from inference.segmenter import open_segmenter  # noqa: E402

SHARED = REPO.parent / "shared"
SIZES = [(640, 360), (1280, 720), (1920, 1080)]
CLIP = SHARED / "media/videos/person_juggling_ball_sam2.mp4"  # 1280x720


def median_ms(fn, n: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100)
    a = p.parse_args()
    cap = cv2.VideoCapture(str(CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, base = cap.read()
    if not ok:
        raise SystemExit(f"cannot read {CLIP}")
    seg = open_segmenter("selfie", SHARED / "models/selfie-segmentation")
    default_threads = cv2.getNumThreads()
    print(f"machine: {describe()}")
    print(f"frames from {CLIP.name}, mask from the selfie model; median of {a.frames} frames\n")
    print(
        "| size | threads | tutorial ms | ours ms (per frame) | ratio | ours accept_mask ms "
        "(per mask) | fail-closed ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for w, h in SIZES:
        frame = cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA)
        mask = seg.segment(frame).mask
        for threads in (1, default_threads):
            cv2.setNumThreads(threads)
            state = compose.new_state(compose.ComposeSettings())
            compose.accept_mask(state, mask, frame, continuous=True)
            tut = median_ms(lambda f=frame, m=mask: compose.tutorial_composite(f, m), a.frames)
            ours = median_ms(
                lambda s=state, f=frame: compose.render(s, f, privacy=True, mask_ok=True),
                a.frames,
            )
            acc = median_ms(
                lambda s=state, f=frame, m=mask: compose.accept_mask(s, m, f, continuous=True),
                a.frames // 4,
            )
            fc = median_ms(
                lambda s=state, f=frame: compose.render(s, f, privacy=True, mask_ok=False),
                a.frames,
            )
            print(
                f"| {w}x{h} | {threads} | {tut:.2f} | {ours:.2f} | {tut / ours:.1f}x faster "
                f"| {acc:.2f} | {fc:.2f} |",
                flush=True,
            )
    cv2.setNumThreads(default_threads)


if __name__ == "__main__":
    main()

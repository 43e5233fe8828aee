"""Compositor cost per frame: the tutorial's method vs ours, side by side, at three sizes.

Tutorial: full-resolution GaussianBlur (41, 41) and a binary paste of the person. Ours: what the
compositor does for every frame (``render``: colour guided upsampling of the mask grid with this
frame, per-pixel work only in the edge band, halo-free blur at reduced resolution);
``accept_mask`` runs once per mask, so it is timed separately. Tutorial and ours run in turn, frame
after frame (load on a shared machine hits both alike); median wall time, and ours' median CPU
time of the calling thread; 1 OpenCV thread and the default.

    python bench/bench_composite.py [--frames 100] [--threads 1] [--sizes 640x360,1280x720]
                                    [--blur 3]

``--blur``: the compositor's default unless given (the look users get); ``--blur 1`` is the
tutorial's look, whose blur runs on the whole mask grid (a stronger blur is done at a lower
resolution: ``compose.blur_factor``). With the compiled kernels the two cost about the same share
of the tutorial's time (0.33 and 0.32 at 640x360, one run each).

``--threads 1`` is the budget's setting (issue 12: render <= 1.5 ms at 640x360, <= 4 ms at
1280x720, one OpenCV thread, median); default: 1 and OpenCV's default, at all three sizes.

"ours, guide from motion": the same ``render`` given the picture the motion compensator makes
anyway (``Tracked.picture``), as the compositor calls it with motion on (the default); the
picture's cost is counted in the compensator's own budget (``bench/motion_lab.py --cost``), and
with ``--no-motion``, stills or lockstep ``render`` makes it itself ("ours").

``--other REV`` also times the compositor of another git revision (its compose.py, kernels.py,
background.py and config.py, loaded as a package of their own) in the same interleaved loop:
the A/B for a change to the compositing code, side by side in one run.

``--paired REV`` is the finer A/B: 60 frames of the clip, each with its own selfie mask (a new
mask every 10 frames, as a fast model would send), ours and REV's ``render`` on every frame in
alternating order, the tutorial's composite before each (it evicts the caches, as the rest of a
compositor frame does); the median of the per-frame ratios of thread CPU time and its
interquartile range. Why: one frame and four functions in rotation (the table) move by +-3 %
between runs of the same code, too much to see a change of a few percent.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import SHARED, clip_frames, describe  # noqa: E402
from compositor import compose  # noqa: E402
from compositor.motion import MotionCompensator  # noqa: E402
from inference.segmenter import open_segmenter  # noqa: E402

SIZES = [(640, 360), (1280, 720), (1920, 1080)]
CLIP = SHARED / "media/videos/person_juggling_ball_sam2.mp4"  # 1280x720


def median_ms(fn, n: int, clock=time.perf_counter) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1000)
    return statistics.median(times)


OTHER_FILES = ("compose.py", "kernels.py", "background.py", "config.py")


def load_other(rev: str, into: Path):
    """The compositing code of git revision ``rev`` as the package ``compositor_<rev>`` (its own
    imports of ``compositor.*`` pointed at it), imported from ``into``; its compose module."""
    name = "compositor_" + "".join(ch if ch.isalnum() else "_" for ch in rev)
    pkg = into / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for f in OTHER_FILES:
        try:
            text = subprocess.run(
                ["git", "show", f"{rev}:compositor/{f}"],
                cwd=REPO, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"--other {rev}: {e.stderr.strip() or e}") from None
        text = text.replace("from compositor import ", f"from {name} import ")
        (pkg / f).write_text(text.replace("from compositor.", f"from {name}."))
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.compose")


def interleaved_ms(fns: dict, n: int) -> dict[str, tuple[float, float]]:
    """Median wall and thread-CPU ms of each function, run in turn (so load hits all alike).

    Why CPU time too: on a shared machine the wall time includes waiting for a core; the
    thread's own CPU time is what the compositor itself costs (it still includes cache effects).
    Why the order rotates every round: a function that runs right after another one on the same
    frame finds that frame in the cache. With a fixed order that favoured whichever came second
    (measured: the same code 1.06x "slower" than an A/B partner that always followed it).
    """
    for fn in fns.values():
        for _ in range(5):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(n):
        shift = i % len(names)
        for k in names[shift:] + names[:shift]:
            fn = fns[k]
            t0, c0 = time.perf_counter(), time.thread_time()
            fn()
            cpu[k].append((time.thread_time() - c0) * 1000)
            wall[k].append((time.perf_counter() - t0) * 1000)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def tracked_picture(state, frame):
    """The picture the motion compensator hands ``render`` as its guide for this frame
    (``Tracked.picture``: the frame halved to the flow resolution, which it makes anyway), made
    the way the compositor makes it with motion on (its default): observe, a mask, track. None
    where the compensator has none (``render`` then makes its own guide: the same as "ours")."""
    comp = MotionCompensator()
    comp.observe(0, frame)
    comp.new_mask(state.mask.alpha, 0, frame)
    comp.observe(1, frame)
    tracked = comp.track(1, frame)
    return None if tracked is None else tracked.picture


def measure_row(frame, mask, threads: int, blur: float, frames: int, other=None) -> str:
    """One table row: the tutorial, ours (and ``other``'s compose module) interleaved on one
    frame and mask at ``threads`` OpenCV threads; accept_mask and the fail-closed frame apart."""
    h, w = frame.shape[:2]
    cv2.setNumThreads(threads)
    state = compose.new_state(compose.ComposeSettings(blur=blur))
    compose.accept_mask(state, mask, frame, continuous=True)
    guide = tracked_picture(state, frame)
    fns = {
        "tutorial": lambda: compose.tutorial_composite(frame, mask),
        "ours": lambda: compose.render(state, frame, privacy=True, mask_ok=True),
        "tracked": lambda: compose.render(state, frame, privacy=True, mask_ok=True, guide=guide),
    }
    if other is not None:
        o_state = other.new_state(other.ComposeSettings(blur=blur))
        other.accept_mask(o_state, mask, frame, continuous=True)
        fns["other"] = lambda: other.render(o_state, frame, privacy=True, mask_ok=True)
    timed = interleaved_ms(fns, frames)
    tut, ours, ours_cpu = timed["tutorial"][0], timed["ours"][0], timed["ours"][1]
    tracked = timed["tracked"][0]
    acc = median_ms(lambda: compose.accept_mask(state, mask, frame, continuous=True), frames // 4)
    fc = median_ms(lambda: compose.render(state, frame, privacy=True, mask_ok=False), frames)
    row = (
        f"| {w}x{h} | {threads} | {tut:.2f} | {ours:.2f} | {tut / ours:.1f}x faster "
        f"| {ours_cpu:.2f} | {acc:.2f} | {fc:.2f} | {tracked:.2f} |"
    )
    if other is not None:
        row += f" {timed['other'][0]:.2f} | {ours / timed['other'][0]:.3f} |"
    return row


def paired_row(seg, other, width: int, pairs: int) -> str:
    """``render`` of ours / of ``other`` (thread CPU time), paired frame by frame over the clip."""
    cv2.setNumThreads(1)
    frames = clip_frames(CLIP, width)
    masks = [seg.segment(f).mask for f in frames]
    mods = (compose, other)
    states = [m.new_state(m.ComposeSettings()) for m in mods]
    ratios, times = [], ([], [])
    for i in range(pairs):
        j = i % len(frames)
        for m, st in zip(mods, states, strict=True):
            if j % 10 == 0:
                m.accept_mask(st, masks[j], frames[j], continuous=True)
        cost = [0.0, 0.0]
        for o in (0, 1) if i % 2 else (1, 0):
            compose.tutorial_composite(frames[j], masks[j])
            c0 = time.thread_time()
            mods[o].render(states[o], frames[j], privacy=True, mask_ok=True)
            cost[o] = time.thread_time() - c0
        times[0].append(cost[0] * 1000)
        times[1].append(cost[1] * 1000)
        ratios.append(cost[0] / cost[1])
    q = statistics.quantiles(ratios, n=4)
    h, w = frames[0].shape[:2]
    return (
        f"| {w}x{h} | {pairs} | {statistics.median(times[0]):.2f} | "
        f"{statistics.median(times[1]):.2f} | **{statistics.median(ratios):.3f}** | "
        f"{q[0]:.3f}-{q[2]:.3f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="only this many (0: 1 and default)")
    p.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    p.add_argument(
        "--blur", type=float, default=compose.ComposeSettings.blur, help="default: the compositor's"
    )
    p.add_argument("--other", metavar="REV", help="also time this git revision's compositor")
    p.add_argument("--paired", metavar="REV", help="only the paired A/B against this revision")
    a = p.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    if a.paired:
        return paired_main(a.paired, sizes, a.frames)
    other = load_other(a.other, Path(tempfile.mkdtemp(prefix="bench-other-"))) if a.other else None
    if other is not None:
        other.warm_up()  # compile its kernels (its own numba cache) before timing
    cap = cv2.VideoCapture(str(CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, base = cap.read()
    if not ok:
        raise SystemExit(f"cannot read {CLIP}")
    seg = open_segmenter("selfie", SHARED / "models/selfie-segmentation")
    default_threads = cv2.getNumThreads()
    thread_counts = (a.threads,) if a.threads > 0 else (1, default_threads)
    print(f"machine: {describe()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"frames from {CLIP.name}, mask from the selfie model, --blur {a.blur:g}; "
        f"median of {a.frames} frames\n"
    )
    extra = f" {a.other} ms | ours / {a.other} |" if other is not None else ""
    print(
        "| size | threads | tutorial ms | ours ms (per frame) | ratio | ours CPU ms (thread time) "
        "| ours accept_mask ms (per mask) | fail-closed ms | ours, guide from motion ms |" + extra
    )
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if other is not None else ""))
    for w, h in sizes:
        frame = cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA)
        mask = seg.segment(frame).mask
        for threads in thread_counts:
            print(measure_row(frame, mask, threads, a.blur, a.frames, other), flush=True)
    cv2.setNumThreads(default_threads)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def paired_main(rev: str, sizes: list, frames: int) -> None:
    other = load_other(rev, Path(tempfile.mkdtemp(prefix="bench-other-")))
    other.warm_up()
    compose.warm_up()
    seg = open_segmenter("selfie", SHARED / "models/selfie-segmentation")
    print(f"machine: {describe()}")
    print(f"{CLIP.name}, 60 frames, a selfie mask every 10; one OpenCV thread; thread CPU time\n")
    print(f"| size | pairs | ours ms | {rev} ms | ours / {rev} (median of pairs) | IQR |")
    print("|---|---|---|---|---|---|")
    for w, _ in sizes:
        print(paired_row(seg, other, w, max(frames, 200)), flush=True)


if __name__ == "__main__":
    main()

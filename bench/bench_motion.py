"""Reused masks with and without motion compensation, measured through the real pipeline.

For every clip with a person in ``../shared/media`` (the videos, and the DAVIS sequences made into
clips), the pipeline runs live with the selfie model slowed to Mask R-CNN's timing by
``--mask-interval S`` (0.5, 1, 2, 4 s), once with motion compensation and once with
``--no-motion`` (the design as it was), side by side in one run. Every composited frame's applied
alpha (``--save-alpha``) is compared with the same model's *fresh* alpha of that frame (a
``--lockstep --save-alpha`` run: every frame gets its own mask):

* IoU of alpha >= 128 (mean over frames; both empty = 1),
* room shown: alpha >= 128 where the fresh mask says background, share of the frame (mean, p99),
* person blurred: alpha < 128 where the fresh mask says person (mean),
* hidden frames (fail-closed), motion cost (compositor ``motion_ms`` p50), display/capture rate.

The reference is the model's own fresh output, not ground truth: this measures what reusing a mask
costs, not the model. DAVIS sequences are 1.5-3.3 s long; they are played forward and backward
twice (ping-pong, a natural motion reversal) to get clips long enough for 4 s intervals.

    python bench/bench_motion.py                     # everything (~20 min on 2 cores)
    python bench/bench_motion.py --clips anchor hike --intervals 2
    python bench/bench_motion.py --intervals 2 --repeats 3   # pooled: less noise per check

With ``--repeats N`` repeat r plays the clip after r/N of a mask interval of still frames (its
first frame), so the pooled pairs see the masks land at N evenly spaced phases of the clip
(``lead_frames``); a single run has no lead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import metrics  # noqa: E402
from bench.harness import SELFIE, SHARED, describe, launch_stats  # noqa: E402
from capture.run import resize_to_width  # noqa: E402

VIDEOS = SHARED / "media/videos"
DAVIS = SHARED / "media/gt_video"
CLIPS = {
    "anchor": VIDEOS / "news_anchor_akiyo_cif.mp4",
    "sitting": VIDEOS / "person_sitting_outdoors_pixabay35590.mp4",
    "carphone": VIDEOS / "video_phone_carphone_qcif.mp4",
    "juggling": VIDEOS / "person_juggling_ball_sam2.mp4",
    "hike": DAVIS / "davis_hike/frames",
    "dance-jump": DAVIS / "davis_dance-jump/frames",
    "rollerblade": DAVIS / "davis_rollerblade/frames",
    "tennis": DAVIS / "davis_tennis/frames",
}
MAX_SECONDS = 10.0  # of each video: enough masks at 4 s, a bench that ends
MASKRCNN_MAX_AGE = "6"  # the slow model's fail-closed limit: the timing being reproduced


def clip_frames(source: Path) -> tuple[list[np.ndarray], float]:
    """A video's first MAX_SECONDS, or a DAVIS folder played ping-pong x2; and its fps."""
    if source.is_dir():
        frames = [cv2.imread(str(p)) for p in sorted(source.glob("*.jpg"))]
        return (frames + frames[-2:0:-1]) * 2, 24.0
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < MAX_SECONDS * fps:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames, fps


def write_clip(frames: list[np.ndarray], fps: float, dest: Path, width: int, lead: int = 0) -> Path:
    """A lossless clip (FFV1) of ``frames`` at capture's ``width`` (``resize_to_width``, so
    capture passes them on as they are), after ``lead`` copies of the first one (a still camera
    before the clip: it moves the clip under the masks' schedule, see ``lead_frames``).

    Lossless, because until the twenty-third session the clips went through OpenCV's MPEG-4
    (``mp4v``) encoder: 3 grey levels of mean error per pixel on sitting, a second generation
    of compression on top of the source's own, and blocking that moves from frame to frame.
    Both arms of a pair saw it, and it still moved the checks: in the lab at S = 2 (masks two
    frames late, five phases) sitting's room ratio went x0.29 -> x0.33 and akiyo's x0.33 ->
    x0.38 on the re-encoded copies."""
    h, w = resize_to_width(frames[0], width).shape[:2]
    out = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not out.isOpened():
        raise RuntimeError(f"this OpenCV cannot write FFV1 (lossless) video to {dest}")
    for f in [frames[0]] * lead + frames:
        out.write(resize_to_width(f, width))
    out.release()
    return dest


def lead_frames(rep: int, repeats: int, interval: float, fps: float) -> int:
    """Still frames before the clip in repeat ``rep``: evenly spaced over one mask interval.

    Why: which frames get a mask decides much of a near-still clip's score (akiyo at S = 2 in
    ``motion_lab.py --phases``: x0.27 to x0.41 by the first mask's frame alone), and a live run
    does not draw that at random. The pipeline starts in the same time every run, so the first
    mask landed on the same clip frame, give or take 3 (32-35 on one host, 25-28 on another),
    and repeats sampled one phase over and over. A user's masks land wherever the model's timing
    puts them, so the pooled repeats should cover every phase alike.
    """
    return round(rep * interval * fps / repeats)


def run(clip: Path, alpha_dir: Path, *extra: str) -> dict:
    """One pipeline run over ``clip`` writing applied alphas; returns the merged stats."""
    alpha_dir.mkdir(parents=True)
    return launch_stats(
        "--source",
        str(clip),
        "--model",
        "selfie",
        "--model-dir",
        str(SELFIE),
        "--headless",
        "--save-alpha",
        str(alpha_dir),
        *extra,
        timeout=600,
    )


def first_masked(live: Path) -> int:
    """Index of the first frame shown with a mask (its alpha keeps something): before it, the
    picture was hidden waiting for the first mask, which depends on how fast the processes
    started, not on the method."""
    for f in sorted(live.glob("*.png")):
        if cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).max() >= 128:
            return int(f.stem)
    return 0


def per_frame(live: Path, fresh: Path, start: int = 0, lead: int = 0) -> np.ndarray:
    """(IoU, room shown, person blurred) of every frame present in both folders from frame
    index ``start``: the applied alphas against the fresh ones, shares of the frame. ``lead``:
    the live clip began with that many copies of the first frame (``write_clip``), so its frame
    i is the fresh run's frame max(0, i - lead)."""
    rows = []
    for f in sorted(live.glob("*.png")):
        i = int(f.stem)
        if i < start:
            continue
        ref = fresh / f"{max(0, i - lead):06d}.png"
        if not ref.exists():
            continue
        a = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) >= 128
        r = cv2.imread(str(ref), cv2.IMREAD_GRAYSCALE) >= 128
        rows.append(metrics.agreement(a, r))
    return np.array(rows, np.float64).reshape(-1, 3)


def flicker(fresh: Path, lags: tuple[int, ...]) -> dict[int, dict]:
    """The model's own flicker: per lag k, its fresh alpha of frame i - k against frame i's,
    summed up like a live run (the folder is read once for all lags). A reused mask cannot
    agree with the fresh one better than the model agrees with itself a frame later, so this
    reads the checks of a clip where the model disagrees with itself (the DAVIS athletes)
    apart from the method's own misses."""
    files = sorted(fresh.glob("*.png"))
    alphas = {int(f.stem): cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) >= 128 for f in files}
    out = {}
    for k in lags:
        rows = [metrics.agreement(alphas[i - k], a) for i, a in alphas.items() if i - k in alphas]
        out[k] = metrics.summary(np.array(rows, np.float64).reshape(-1, 3))
    return out


def compare(live: Path, fresh: Path, start: int = 0, lead: int = 0) -> dict:
    """Per-frame agreement of the applied alphas with the fresh ones (frames present in both,
    from frame index ``start``; ``lead`` as in ``per_frame``), summarised."""
    return metrics.summary(per_frame(live, fresh, start, lead))


def measure(
    name: str, source: Path, tmp: Path, intervals: list[float], width: int, repeats: int = 1
) -> list[dict]:
    """The clip's fresh alphas once, then per interval ``repeats`` pairs of runs, no motion
    and motion, in alternating order (each pair shares the machine's moment alike), repeat r
    after ``lead_frames`` still frames. Rows come in pairs, no motion first."""
    frames, fps = clip_frames(source)
    fresh = tmp / f"{name}-fresh"
    plain = write_clip(frames, fps, tmp / f"{name}.mkv", width)
    run(plain, fresh, "--lockstep", "--width", str(width))
    rows = []
    for s in intervals:
        for rep in range(repeats):
            lead = lead_frames(rep, repeats, s, fps)
            clip = (
                write_clip(frames, fps, tmp / f"{name}-{lead}.mkv", width, lead) if lead else plain
            )
            pair = {}
            for motion in (False, True) if rep % 2 == 0 else (True, False):
                pair[motion] = _timed_run(name, clip, tmp, s, width, motion, rep, lead)
                pair[motion].update(fresh=fresh)
            for motion in (False, True):
                rows.append(pair[motion])
                print(format_row(pair[motion]), flush=True)
    return rows


def _timed_run(
    name: str, clip: Path, tmp: Path, s: float, width: int, motion: bool, rep: int, lead: int
) -> dict:
    """One live run at ``--mask-interval s``, motion on or off, scored against the fresh run
    (``clip`` begins with ``lead`` still frames)."""
    tag = f"{name}-{s:g}-{'motion' if motion else 'nomotion'}-{rep}"
    stats = run(
        clip,
        tmp / tag,
        "--mask-interval",
        str(s),
        "--max-mask-age",
        MASKRCNN_MAX_AGE,
        "--width",
        str(width),
        *([] if motion else ["--no-motion"]),
    )
    comp = stats.get("stages", {}).get("compositor", {})
    scores = per_frame(tmp / tag, tmp / f"{name}-fresh", lead=lead)
    row = metrics.summary(scores)
    row.update(
        scores=scores,  # pooled over repeats by report_ratios without reading the files again
        live=tmp / tag,
        clip=name,
        interval=s,
        motion=motion,
        repeat=rep,
        lead=lead,
        hidden_frames=stats.get("fail_closed_frames", 0),
        motion_ms=(comp.get("motion_ms") or {}).get("p50"),
        rate=(stats.get("display_fps") or 0) / (stats.get("capture_fps") or 1),
    )
    return row


HEADER = (
    f"{'clip':12} {'S':>4} {'motion':>6} {'frames':>6} {'IoU':>6} {'room%':>6} {'p99%':>6} "
    f"{'blur%':>6} {'hidden':>6} {'ms':>5} {'disp/cap':>8}"
)


def format_row(r: dict) -> str:
    if not r.get("frames"):
        return f"{r['clip']:12} {r['interval']:>4g} {'on' if r['motion'] else 'off':>6} no frames"
    ms = f"{r['motion_ms']:.2f}" if r.get("motion_ms") is not None else "-"
    return (
        f"{r['clip']:12} {r['interval']:>4g} {'on' if r['motion'] else 'off':>6} {r['frames']:>6} "
        f"{r['iou']:>6.3f} {r['room_mean']:>6.2f} {r['room_p99']:>6.2f} {r['blurred']:>6.2f} "
        f"{r['hidden_frames']:>6} {ms:>5} {r['rate']:>8.3f}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    p.add_argument("--intervals", nargs="*", type=float, default=[0.5, 1.0, 2.0, 4.0])
    p.add_argument("--width", type=int, default=640, help="pipeline working width")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="pairs of runs per clip and interval, at evenly spaced mask phases, pooled",
    )
    a = p.parse_args()
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    print(describe())
    print(f"selfie model, --mask-interval S, --max-mask-age {MASKRCNN_MAX_AGE}, --width {a.width}")
    print(HEADER)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name in a.clips:
            rows += measure(name, CLIPS[name], tmp, a.intervals, a.width, a.repeats)
        report_ratios(rows)  # inside: it reads the saved alphas again
    return 0


def report_ratios(rows: list[dict]) -> None:
    """Motion vs no-motion per clip and interval, every frame and without the startup; with
    repeats, per pair of runs and then pooled over the pairs (every frame of every run)."""
    print("\nratios at each interval (motion / no-motion): room shown, IoU, person blurred;")
    print("every frame, then from the first frame both runs showed with a mask (startup excluded);")
    print("then the issue's checks on every frame")
    pooled: dict[tuple, list[list[np.ndarray]]] = {}
    for off, on in zip(rows[::2], rows[1::2], strict=True):
        if off.get("frames") and on.get("frames"):
            start = max(first_masked(off["live"]), first_masked(on["live"]))
            late = [compare(r["live"], r["fresh"], start, r["lead"]) for r in (off, on)]
            rep = (
                f" #{on['repeat']} (lead {on['lead']})"
                if any(r.get("repeat") for r in rows)
                else ""
            )
            print(
                f"{on['clip']:12} {on['interval']:>4g}{rep}  {ratios(off, on)}  |  from frame "
                f"{start}: {ratios(*late)}  |  {metrics.checks(off, on)}"
            )
            runs = pooled.setdefault((on["clip"], on["interval"]), [[], []])
            for i, r in enumerate((off, on)):
                runs[i].append(r["scores"])
    if any(len(v[0]) > 1 for v in pooled.values()):
        print("\npooled over the repeats (every frame of every run):")
        for (clip, s), (offs, ons) in pooled.items():
            off, on = (metrics.summary(np.concatenate(x)) for x in (offs, ons))
            print(
                f"{clip:12} {s:>4g} x{len(offs)}  {ratios(off, on)}  |  {metrics.checks(off, on)}"
            )
    report_flicker(rows)


def report_flicker(rows: list[dict]) -> None:
    """Per clip, the model against itself 1 and 5 frames later (``flicker``)."""
    print("\nthe model's own flicker: its fresh mask of frame i - k against frame i's")
    for fresh in dict.fromkeys(r["fresh"] for r in rows if r.get("frames")):
        cells = []
        for lag, f in flicker(fresh, (1, 5)).items():
            if f["frames"]:
                cells.append(
                    f"k={lag}: IoU {f['iou']:.3f}  room {f['room_mean']:.2f} %  "
                    f"blurred {f['blurred']:.2f} %"
                )
        print(f"{fresh.name.removesuffix('-fresh'):12} " + "  |  ".join(cells))


def ratios(off: dict, on: dict) -> str:
    room = on["room_mean"] / off["room_mean"] if off["room_mean"] else float("nan")
    return (
        f"room x{room:.2f}  IoU {on['iou'] - off['iou']:+.3f}  "
        f"blurred {on['blurred'] - off['blurred']:+.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())

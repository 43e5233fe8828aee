"""Quality of the applied alpha on every shared set: raw model output vs refined, side by side.

For each set (the photos, each DAVIS clip with people, and ``cows``, which has no person) the real
pipeline runs twice in lock-step (``launch.py --lockstep --save-alpha``: every frame gets its own
mask and the compositor writes the alpha it applied), selfie model, frames 640 wide (``--width
640``, never enlarged): raw = ``--no-refine --no-temporal`` (the model's mask, bilinear upsampling
only), refined = as shipped. Each alpha is scaled to its ground truth's size (bilinear) and scored
there: mean IoU and boundary F (2 px tolerance, DAVIS style). ``cows``: the share of the frame kept
as person (should be ~0).

The capture stage treats a folder of pictures as unrelated stills, so through the pipeline the
DAVIS frame folders get no temporal smoothing; the offline half of the output (``--offline``, on by
default: ``bench/quality_lab.py``, the same compose functions on cached model outputs) feeds the
clips as video, with temporal smoothing. If the pipeline cannot run (e.g. the launcher is being
changed), the pipeline half says so and the offline half still runs.

    python bench/bench_quality.py [--sets photos,hike,dance-jump,rollerblade,tennis,cows]
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

from bench import quality_lab as lab  # noqa: E402
from bench.harness import describe, launch_stats  # noqa: E402
from compositor import compose  # noqa: E402

SELFIE, GT_IMAGES, GT_VIDEO = lab.SELFIE, lab.GT_IMAGES, lab.GT_VIDEO  # one place for the paths
WIDTH = 640


def pipeline_source(name: str, tmp: Path) -> tuple[Path, list[np.ndarray | None]]:
    """What to give ``--source`` for a set, and its GT masks in frame order (None: no person)."""
    if name == "photos":
        src = tmp / "photos"
        src.mkdir(exist_ok=True)
        gts = []
        for photo in sorted(GT_IMAGES.iterdir()):
            if photo.stem.endswith(("_mask", "_parsing_orig")):
                continue
            mask = GT_IMAGES / f"{photo.stem}_mask.png"
            if mask.exists():
                (src / photo.name).symlink_to(photo)
        for photo in sorted(src.iterdir()):
            gts.append(cv2.imread(str(GT_IMAGES / f"{photo.stem}_mask.png"), cv2.IMREAD_GRAYSCALE))
        return src, gts
    if name == "cows":
        video = GT_VIDEO / "davis_cows_no_person/cows.mp4"
        n = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
        return video, [None] * n
    d = GT_VIDEO / f"davis_{name}"
    frames = sorted((d / "frames").glob("*.jpg"))
    gts = [cv2.imread(str(d / "masks" / f"{f.stem}.png"), cv2.IMREAD_GRAYSCALE) for f in frames]
    return d / "frames", gts


def run_pipeline(source: Path, out: Path, refine: bool) -> None:
    """The pipeline in lock-step over ``source``, writing the applied alphas to ``out``."""
    launch_stats(
        "--source",
        str(source),
        "--model",
        "selfie",
        "--model-dir",
        str(SELFIE),
        "--lockstep",
        "--headless",
        "--width",
        str(WIDTH),
        "--save-alpha",
        str(out),
        *([] if refine else ["--no-refine", "--no-temporal"]),
        timeout=900,
    )


def read_alphas(out: Path, n: int) -> list[np.ndarray]:
    alphas = []
    for i in range(n):
        a = cv2.imread(str(out / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise RuntimeError(f"no alpha for frame {i} in {out}")
        alphas.append(a)
    return alphas


def row(name: str, n: int, raw: tuple[float, float], ref: tuple[float, float]) -> str:
    if name == "cows":
        return f"| cows (no person: share kept) | {n} | {raw[0]:.4f} | {ref[0]:.4f} | - | - | - |"
    return (
        f"| {name} | {n} | {raw[0]:.3f} | {ref[0]:.3f} | {raw[1]:.3f} | {ref[1]:.3f} "
        f"| {ref[1] - raw[1]:+.3f} |"
    )


HEADER = (
    "| set | frames | IoU raw | IoU refined | boundary F raw | boundary F refined | F gain |\n"
    "|---|---|---|---|---|---|---|"
)


def pipeline_half(sets: list[str]) -> None:
    print("## through the pipeline (launch.py --lockstep --save-alpha, --width 640)\n")
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name in sets:
            try:
                source, gts = pipeline_source(name, tmp)
                scores = {}
                for refine in (False, True):
                    out = tmp / f"{name}-{refine}"
                    run_pipeline(source, out, refine)
                    scores[refine] = lab.score(read_alphas(out, len(gts)), gts)
            except (SystemExit, RuntimeError, OSError) as e:
                print(f"| {name} | pipeline failed: {str(e).strip().splitlines()[0][:120]} |")
                continue
            print(row(name, len(gts), scores[False], scores[True]), flush=True)


def offline_half(sets: list[str], cache: Path) -> None:
    print("\n## offline (bench/quality_lab.py: same compose functions, clips as video)\n")
    print(HEADER, flush=True)
    for name in sets:
        data = lab.model_outputs(name, WIDTH, cache)
        raw_settings = compose.ComposeSettings(refine=False, temporal=False)
        raw_alphas = lab.run_set(data, raw_settings)
        ref_alphas = lab.run_set(data, compose.ComposeSettings())
        raw, ref = lab.score(raw_alphas, data["gts"]), lab.score(ref_alphas, data["gts"])
        print(row(name, len(data["frames"]), raw, ref), flush=True)
        if name == "photos":  # per annotation source: they draw outlines differently
            print("\n".join(lab.source_rows(raw_alphas, ref_alphas, data["gts"])), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(lab.ALL_SETS))
    p.add_argument("--no-pipeline", action="store_true", help="offline half only")
    p.add_argument("--no-offline", action="store_true", help="pipeline half only")
    p.add_argument("--cache", type=Path, default=Path("/tmp/privacycam-quality-lab"))
    a = p.parse_args()
    sets = a.sets.split(",")
    print(f"machine: {describe()}")
    print("model: selfie (MediaPipe, real weights); scored at each ground truth's own size\n")
    if not a.no_pipeline:
        pipeline_half(sets)
    if not a.no_offline:
        offline_half(sets, a.cache)


if __name__ == "__main__":
    main()

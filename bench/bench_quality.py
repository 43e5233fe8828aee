"""Quality of the applied alpha: raw model output vs refined, measured through the real pipeline.

Runs ``launch.py --lockstep --save-alpha`` (every frame gets its own mask, and the compositor writes
the alpha it applied) with the selfie model, once with ``--no-refine`` (the model's mask with
bilinear upsampling only) and once as shipped (soft alpha, guided refinement), at the source's own
resolution (``--width 0``), and scores the alphas against the ground-truth masks: mean IoU and
boundary F-measure (2 px tolerance, DAVIS style).

    python bench/bench_quality.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import describe, launch_stats  # noqa: E402
from bench.metrics import boundary_f, iou  # noqa: E402

SHARED = REPO.parent / "shared"
SELFIE = SHARED / "models/selfie-segmentation"
GT_IMAGES = SHARED / "media/gt_images"
HIKE = SHARED / "media/gt_video/davis_hike"


def image_pairs(tmp: Path) -> tuple[Path, list[Path]]:
    """A folder with only the photos (the source), and their GT masks in the same order."""
    src = tmp / "photos"
    src.mkdir()
    masks = []
    for photo in sorted(GT_IMAGES.iterdir()):
        if photo.stem.endswith(("_mask", "_parsing_orig")):
            continue
        mask = GT_IMAGES / f"{photo.stem}_mask.png"
        if mask.exists():
            (src / photo.name).symlink_to(photo)
    for photo in sorted(src.iterdir()):
        masks.append(GT_IMAGES / f"{photo.stem}_mask.png")
    return src, masks


def hike_pairs() -> tuple[Path, list[Path]]:
    frames = sorted((HIKE / "frames").glob("*.jpg"))
    return HIKE / "frames", [HIKE / "masks" / f"{f.stem}.png" for f in frames]


def run(source: Path, out: Path, refine: bool) -> None:
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
        "0",
        "--save-alpha",
        str(out),
        *([] if refine else ["--no-refine"]),
        timeout=600,
    )


def score(out: Path, masks: list[Path]) -> tuple[float, float]:
    ious, fs = [], []
    for i, m in enumerate(masks):
        alpha = cv2.imread(str(out / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(str(m), cv2.IMREAD_GRAYSCALE)
        if alpha is None:
            raise SystemExit(f"no alpha for frame {i} in {out}")
        if gt.shape != alpha.shape:
            gt = cv2.resize(gt, (alpha.shape[1], alpha.shape[0]), interpolation=cv2.INTER_NEAREST)
        ious.append(iou(alpha, gt))
        fs.append(boundary_f(alpha, gt, tolerance=2))
    return float(np.mean(ious)), float(np.mean(fs))


def main() -> None:
    print(f"machine: {describe()}")
    print("model: selfie (MediaPipe, real weights); alphas written by the pipeline in --lockstep\n")
    print("| data | frames | IoU raw | IoU refined | boundary F raw | boundary F refined |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        sets = [
            ("gt_images (16 photos + 1 without a person)", *image_pairs(tmp)),
            ("DAVIS hike (video)", *hike_pairs()),
        ]
        for name, source, masks in sets:
            results = {}
            for refine in (False, True):
                out = tmp / f"{source.name}-{refine}"
                run(source, out, refine)
                results[refine] = score(out, masks)
            (iou_raw, f_raw), (iou_ref, f_ref) = results[False], results[True]
            print(
                f"| {name} | {len(masks)} | {iou_raw:.3f} | {iou_ref:.3f} | {f_raw:.3f} | "
                f"{f_ref:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Offline quality lab: raw vs refined alpha on every shared set, no pipeline, cached model output.

For fast iteration on ``compositor/compose.py``'s refinement. Every frame is resized to ``--width``
(640, as the camera stage does), segmented once with the selfie model (cached in ``--cache``),
composited with ``compose.accept_mask``/``render`` exactly as the compositor does (raw =
``refine=False, temporal=False``: the model's mask, bilinear upsampling only), and the applied
alpha is scaled to the ground truth's size (bilinear) and scored
there: mean IoU and boundary F (2 px tolerance). Video sets are fed as continuous (temporal
smoothing on), photos as unrelated stills. ``cows`` has no person: the share of the frame kept as
person is reported instead.

    python bench/quality_lab.py [--sets photos,hike,...] [--mask native|frame]

``--mask frame`` (default) feeds what the worker sends today (frame-sized, bilinear-upsampled);
``--mask native`` feeds the model's own grid (un-letterboxed probability, no upsampling), the worker
change docs/compositing.md proposes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import SELFIE, SHARED  # noqa: E402
from bench.metrics import boundary_f, fragments, iou  # noqa: E402
from compositor import compose  # noqa: E402

GT_IMAGES = SHARED / "media/gt_images"
GT_VIDEO = SHARED / "media/gt_video"
CLIPS = ("hike", "dance-jump", "rollerblade", "tennis")
ALL_SETS = ("photos", *CLIPS, "cows")


def photos() -> list[Path]:
    """Every shared photo that has a GT mask, sorted (the order of every photo list here)."""
    return [
        p
        for p in sorted(GT_IMAGES.iterdir())
        if not p.stem.endswith(("_mask", "_parsing_orig"))
        and (GT_IMAGES / f"{p.stem}_mask.png").exists()
    ]


def photo_sources() -> dict[str, list[int]]:
    """Photo indices by annotation source (the name's prefix: hsd, coco, cihp; voc has no
    person). Why: the sources draw outlines by different conventions (bench/gt_outlines.py),
    so one mean over the photos hides opposite results."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(photos()):
        groups.setdefault(p.stem.split("_")[0], []).append(i)
    return groups


def load_set(name: str) -> tuple[list[np.ndarray], list[np.ndarray | None], bool]:
    """Source frames (BGR), GT masks (None for cows) and whether the frames are a video."""
    if name == "photos":
        paths = photos()
        frames = [cv2.imread(str(p)) for p in paths]
        gts = [cv2.imread(str(GT_IMAGES / f"{p.stem}_mask.png"), 0) for p in paths]
        return frames, gts, False
    if name == "cows":
        cap = cv2.VideoCapture(str(GT_VIDEO / "davis_cows_no_person/cows.mp4"))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        return frames, [None] * len(frames), True
    d = GT_VIDEO / f"davis_{name}"
    paths = sorted((d / "frames").glob("*.jpg"))
    frames = [cv2.imread(str(p)) for p in paths]
    gts = [cv2.imread(str(d / "masks" / f"{p.stem}.png"), cv2.IMREAD_GRAYSCALE) for p in paths]
    return frames, gts, True


def resize_width(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    if width <= 0 or width == w:
        return img
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(img, (width, round(h * width / w)), interpolation=interp)


def native_prob(seg, frame: np.ndarray) -> np.ndarray:
    """The selfie model's probability on its own grid, letterbox padding removed (uint8)."""
    from inference.segmenters import selfie

    h, w = frame.shape[:2]
    variant = selfie.pick_variant(w, h, seg.options.selfie_variant)
    net = seg.net(variant)
    size = selfie.INPUT_SIZES[variant]
    net.setInput(selfie.to_blob(frame, size, seg.fit))
    prob = net.forward().reshape(size[1], size[0])
    sw, sh, left, top = selfie.letterbox_geometry(w, h, *size)
    prob = prob[top : top + sh, left : left + sw]
    return np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)


def model_outputs(name: str, width: int, cache: Path) -> dict:
    """Frames at ``width``, GT, frame-sized masks and native-grid masks (cached as .npz)."""
    path = cache / f"{name}-{width}.npz"
    frames, gts, video = load_set(name)
    frames = [resize_width(f, width) for f in frames]
    if path.exists():
        z = np.load(path, allow_pickle=True)
        return dict(
            frames=frames,
            gts=gts,
            video=video,
            frame=[np.asarray(m, np.uint8) for m in z["frame"]],
            native=[np.asarray(m, np.uint8) for m in z["native"]],
        )
    from inference.segmenter import SegmenterOptions, open_segmenter

    seg = open_segmenter("selfie", SELFIE, SegmenterOptions())
    full = [seg.segment(f).mask for f in frames]
    nat = [native_prob(seg, f) for f in frames]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, frame=np.array(full, dtype=object), native=np.array(nat, dtype=object))
    return dict(frames=frames, gts=gts, video=video, frame=full, native=nat)


def run_set(data: dict, settings: compose.ComposeSettings, mask_kind: str = "frame") -> list:
    """Applied alpha for every frame, through accept_mask + render as the compositor does."""
    state = compose.new_state(settings)
    alphas = []
    for frame, mask in zip(data["frames"], data[mask_kind], strict=True):
        compose.accept_mask(state, mask, frame, continuous=data["video"])
        r = compose.render(state, frame, privacy=True, mask_ok=True)
        assert not r.fail_closed
        alphas.append(r.alpha.copy())
    return alphas


def score(alphas: list, gts: list) -> tuple[float, float]:
    """(mean IoU, mean boundary F) at the GT's size; for a set without GT: (person share, nan)."""
    if gts[0] is None:
        return float(np.mean([np.mean(a >= 128) for a in alphas])), float("nan")
    ious, fs = [], []
    for a, gt in zip(alphas, gts, strict=True):
        if a.shape != gt.shape:
            a = cv2.resize(a, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        ious.append(iou(a, gt))
        fs.append(boundary_f(a, gt, tolerance=2))
    return float(np.mean(ious)), float(np.mean(fs))


def source_rows(raw: list, ref: list, gts: list) -> list[str]:
    """One table row per photo source with a person: n, IoU and boundary F raw / refined, dF
    (bench_quality's columns; quality_lab adds its fragments column)."""
    rows = []
    for source, idx in photo_sources().items():
        if not any(gts[i].max() > 0 for i in idx):
            continue  # no person in this source's photos: nothing to score
        r = score([raw[i] for i in idx], [gts[i] for i in idx])
        f = score([ref[i] for i in idx], [gts[i] for i in idx])
        rows.append(
            f"| photos: {source} | {len(idx)} | {r[0]:.3f} | {f[0]:.3f} | {r[1]:.3f} | "
            f"{f[1]:.3f} | {f[1] - r[1]:+.3f} |"
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(ALL_SETS))
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--mask", choices=("frame", "native"), default="frame")
    p.add_argument("--temporal", choices=("on", "off"), default="on", help="refined run")
    p.add_argument("--cache", type=Path, default=Path("/tmp/privacycam-quality-lab"))
    a = p.parse_args()
    print(f"selfie model, frames {a.width} wide, masks: {a.mask}; scored at the GT's size\n")
    print(
        "| set | frames | IoU raw | IoU refined | boundary F raw | boundary F refined | dF "
        "| fragments per frame: GT / raw / refined |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in a.sets.split(","):
        data = model_outputs(name, a.width, a.cache)
        raw_settings = compose.ComposeSettings(refine=False, temporal=False)
        raw_alphas = run_set(data, raw_settings, a.mask)
        raw = score(raw_alphas, data["gts"])
        ref_settings = compose.ComposeSettings(temporal=a.temporal == "on")
        ref_alphas = run_set(data, ref_settings, a.mask)
        ref = score(ref_alphas, data["gts"])
        frag = [
            float(np.mean([fragments(x) for x in xs]))
            for xs in (data["gts"], raw_alphas, ref_alphas)
            if xs[0] is not None
        ]
        if name == "cows":
            print(
                f"| cows (no person: share kept) | {len(data['frames'])} | {raw[0]:.4f} | "
                f"{ref[0]:.4f} | - | - | - | - / {frag[0]:.1f} / {frag[1]:.1f} |",
                flush=True,
            )
            continue
        print(
            f"| {name} | {len(data['frames'])} | {raw[0]:.3f} | {ref[0]:.3f} | {raw[1]:.3f} | "
            f"{ref[1]:.3f} | {ref[1] - raw[1]:+.3f} | "
            f"{frag[0]:.1f} / {frag[1]:.1f} / {frag[2]:.1f} |",
            flush=True,
        )
        if name == "photos":
            for line in source_rows(raw_alphas, ref_alphas, data["gts"]):
                print(line + " - |", flush=True)


if __name__ == "__main__":
    main()

"""Make docs/before_after.jpg: original | privacy blur | replacement image, plus the tutorial.

Uses the real selfie segmenter and the real compose functions on a frame of a real clip, so the
picture in the docs is what the program produces. Run from the repo root:

    python bench/make_before_after.py [--video PATH] [--frame N] [--out docs/before_after.jpg]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from common.errors import FatalError  # noqa: E402
from compositor.compose import (  # noqa: E402
    ComposeSettings,
    accept_mask,
    new_state,
    render,
    tutorial_composite,
)
from inference.segmenter import open_segmenter  # noqa: E402


def read_frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise FatalError(f"cannot read frame {index} of {video}")
    return frame


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(out, text, (8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def generated_backdrop(h: int, w: int) -> np.ndarray:
    """A calm studio-like backdrop: vertical gradient with soft light spots (deterministic)."""
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    top, bottom = np.array([150, 110, 60], np.float32), np.array([70, 45, 25], np.float32)  # BGR
    img = top * (1 - y[..., None]) + bottom * y[..., None] + 0 * x[..., None]
    for cx, cy, r, gain in ((0.2, 0.3, 0.25, 60), (0.8, 0.25, 0.2, 45), (0.6, 0.8, 0.3, 30)):
        d2 = ((x - cx) * w / h) ** 2 + (y - cy) ** 2
        img += gain * np.exp(-d2 / (2 * r * r))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def composite(frame: np.ndarray, mask: np.ndarray, settings: ComposeSettings) -> np.ndarray:
    state = new_state(settings)
    accept_mask(state, mask, frame, continuous=False)
    return render(state, frame, privacy=True, mask_ok=True).image.copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--video",
        type=Path,
        default=SHARED / "media/videos/person_sitting_outdoors_pixabay35590.mp4",
    )
    ap.add_argument("--frame", type=int, default=60)
    ap.add_argument(
        "--background",
        type=Path,
        default=None,
        help="replacement image (default: a generated backdrop, so no third-party picture is "
        "redistributed in the docs)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "docs/before_after.jpg")
    args = ap.parse_args()

    frame = read_frame(args.video, args.frame)
    if args.background is None:
        args.background = Path(tempfile.mkdtemp()) / "backdrop.png"
        cv2.imwrite(str(args.background), generated_backdrop(720, 1280))
    seg = open_segmenter("selfie", SHARED / "models/selfie-segmentation")
    mask = seg.segment(frame).mask
    panels = [
        label(frame, "original"),
        label(tutorial_composite(frame, mask), "tutorial: binary paste + blur 41"),
        label(
            composite(frame, mask, ComposeSettings()),
            f"privacycam: blur (default, --blur {ComposeSettings.blur:g})",
        ),
        label(composite(frame, mask, ComposeSettings(background=args.background)), "replacement"),
    ]
    top, bottom = np.hstack(panels[:2]), np.hstack(panels[2:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.vstack([top, bottom]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {args.out} ({args.video.name} frame {args.frame})")


if __name__ == "__main__":
    try:
        main()
    except FatalError as e:
        print(f"make_before_after: error: {e}", file=sys.stderr)
        sys.exit(2)

"""What every benchmark shares: the line describing the machine, and running the real pipeline."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout: models and media every benchmark reads (one place for the paths)
SHARED = REPO.parent / "shared"
SELFIE = SHARED / "models/selfie-segmentation"
STANDIN = SHARED / "models/mask-rcnn-standin"  # Mask R-CNN's cost, random weights: timing only


def describe() -> str:
    """CPU model, cores, Python and OpenCV: numbers mean nothing without the machine."""
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)"
    )


def clip_frames(clip: Path, width: int, n: int = 60) -> list:
    """The first ``n`` frames of ``clip`` at ``width`` px wide (aspect kept); exits with a line if
    the clip gives none."""
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        h = round(frame.shape[0] * width / frame.shape[1])
        frames.append(cv2.resize(frame, (width, h)))
    cap.release()
    if not frames:
        raise SystemExit(f"cannot read {clip}")
    return frames


def launch_stats(*args: str, timeout: float) -> dict:
    """Run ``python launch.py ARGS --stats-json TMP`` to the end and return its merged stats."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        cmd = [sys.executable, str(REPO / "launch.py"), *args, "--stats-json", str(stats)]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise SystemExit(f"pipeline failed:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
        return json.loads(stats.read_text())

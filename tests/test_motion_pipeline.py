"""Issue 9 with real processes: between slow masks the room never shows sharp through an old
silhouette, also when the worker freezes, and a still scene loses no pixel to the change rule.

The clip is generated: a real person cut out of a shared photo (its ground-truth mask) moving over
a fine texture of saturated colour blocks. That texture is what "the room" looks like sharp; any
blurred or hidden version of it is far from it in colour, and the person almost never matches it.
So a recorded frame shows the room sharp wherever it equals the texture in a whole 9x9 window
(smaller matches are the soft edge every mask has, fresh or not). The limit, 0.2 % of the frame
after that erosion, is a patch of about 30x30 px (a few texture blocks, nothing legible); the old
design shows 11-14 % here (a person-sized strip of room), motion compensation at most ~0.06 %
(a small patch where the person meets the frame's bottom edge, where the flow is weakest). The
selfie model runs at Mask R-CNN's timing (``--mask-interval 1``).
"""

import os
import signal
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import (
    MEDIA,
    SELFIE,
    Procs,
    launch,
    needs_shared,
    read_json,
    stats_now,
    wait_for,
)

pytestmark = needs_shared

W, H, FPS = 640, 360, 30.0
PERSON = MEDIA / "gt_images" / "hsd_015.jpg"  # one the selfie model segments cleanly
PALETTE = np.array(
    [[0, 0, 255], [0, 255, 0], [255, 0, 0], [0, 255, 255], [255, 0, 255], [255, 255, 0]], np.uint8
)


def texture(seed: int = 1) -> np.ndarray:
    """The room: random saturated 8x8 blocks (legible when sharp, grey mush when blurred)."""
    rng = np.random.default_rng(seed)
    blocks = PALETTE[rng.integers(0, len(PALETTE), (H // 8, W // 8))]
    return cv2.resize(blocks, (W, H), interpolation=cv2.INTER_NEAREST)


def cutout(height: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """The person of a shared photo, scaled to ``height``, and its mask (bool)."""
    img = cv2.imread(str(PERSON))
    mask = cv2.imread(str(PERSON.with_name(PERSON.stem + "_mask.png")), cv2.IMREAD_GRAYSCALE)
    w = round(img.shape[1] * height / img.shape[0])
    img = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
    return img, cv2.resize(mask, (w, height), interpolation=cv2.INTER_NEAREST) >= 128


def make_clip(path: Path, speed: float, frames: int = 150, noise: float = 0.0) -> Path:
    """The person moving ping-pong at ``speed`` px/frame (a loop without a jump), Motion-JPEG."""
    bg, (person, mask) = texture(), cutout()
    rng = np.random.default_rng(2)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    x0, span = 60, W - person.shape[1] - 120
    for i in range(frames):
        t = (i * speed) % (2 * span) if speed else 0
        x = x0 + int(t if t <= span else 2 * span - t)
        frame = bg.copy()
        roi = frame[H - person.shape[0] :, x : x + person.shape[1]]
        roi[mask] = person[mask]
        if noise:
            frame = cv2.add(frame, rng.normal(0, noise, frame.shape).astype(np.int16), dtype=0)
        out.write(frame)
    out.release()
    return path


def sharp_room_share(recording: Path) -> list[float]:
    """Per recorded frame: share of the frame where the room is shown sharp (9x9 windows)."""
    bg = texture().astype(np.int16)
    cap = cv2.VideoCapture(str(recording))
    shares = []
    kernel = np.ones((9, 9), np.uint8)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (H, W, 3)
        same = (np.abs(frame.astype(np.int16) - bg).max(axis=2) < 48).astype(np.uint8)
        shares.append(float(cv2.erode(same, kernel).mean()))
    cap.release()
    return shares


def run_recorded(tmp_path: Path, clip: Path, *extra: str, frames: int = 150) -> list[float]:
    rec = tmp_path / f"rec{'-'.join(extra)}.mp4"
    r = launch(
        "--source", clip, "--loop", "--model", "selfie", "--model-dir", SELFIE, "--headless",
        "--mask-interval", "1", "--max-frames", frames, "--output", rec, *extra,
        timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return sharp_room_share(rec)


def test_moving_person_never_shows_the_room_sharp(tmp_path):
    clip = make_clip(tmp_path / "moving.avi", speed=4.0)
    shares = run_recorded(tmp_path, clip, frames=120)
    assert len(shares) >= 100
    assert max(shares) < 0.002, f"room shown sharp: max {max(shares):.2%} of a frame"
    # The same run with the old design does show it: the test can see a leak.
    old = run_recorded(tmp_path, clip, "--no-motion", frames=75)
    assert max(old) > 0.01, f"the old design should leak here (max {max(old):.2%})"


def test_frozen_worker_with_a_moving_person_still_hides_the_room(tmp_path):
    """SIGSTOP the worker (a hung model) while the person walks on: the old mask must follow
    the person or hide, never leave the room sharp behind them."""
    clip = make_clip(tmp_path / "moving.avi", speed=4.0)
    ep = [f"ipc://{tmp_path}/{n}" for n in ("f", "i", "o", "c")]
    procs, rec = Procs(tmp_path), tmp_path / "rec.mp4"
    try:
        procs.start("capture", "--source", clip, "--loop", "--bind", ep[0])
        procs.start(
            "compositor", "--frames", ep[0], "--infer-bind", ep[1], "--out-bind", ep[2],
            "--control-bind", ep[3], "--stats-json", tmp_path / "comp.json",
        )  # fmt: skip
        worker = procs.start(
            "inference", "--connect", ep[1], "--model", "selfie", "--model-dir", SELFIE,
            "--mask-interval", "1",
        )  # fmt: skip
        display = procs.start(
            "display", "--headless", "--connect", ep[2], "--control", ep[3], "--output", rec
        )
        stats = tmp_path / "comp.json"
        wait_for(lambda: stats_now(stats).get("masks_applied", 0) >= 2, 60, "two masks applied")
        os.kill(worker.pid, signal.SIGSTOP)
        shown = read_json(stats)["frames_composited"]
        wait_for(
            lambda: read_json(stats)["frames_composited"] >= shown + 60, 60, "2 s while frozen"
        )
        display.terminate()
        display.wait(20)
    finally:
        procs.stop_all()  # thaws the worker before stopping it
    shares = sharp_room_share(rec)
    assert len(shares) >= 60
    assert max(shares) < 0.002, f"room shown sharp: max {max(shares):.2%} of a frame"


def test_still_scene_loses_no_pixel_to_the_change_rule(tmp_path):
    """A person sitting still, with a webcam's noise (sigma 2 levels) on every frame."""
    clip = make_clip(tmp_path / "still.avi", speed=0.0, frames=60, noise=2.0)
    stats = tmp_path / "s.json"
    r = launch(
        "--source", clip, "--loop", "--model", "selfie", "--model-dir", SELFIE, "--headless",
        "--mask-interval", "0.5", "--max-frames", "60", "--stats-json", stats, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    comp = read_json(stats)["stages"]["compositor"]
    assert comp["masks_applied"] >= 2 and comp["motion_tracked_frames"] >= 30
    assert comp["motion_hidden_frames"] == 0, comp.get("motion_hidden_share")

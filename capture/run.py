"""Capture: read a camera, video file, still image or image folder and publish numbered frames.

File sources are paced at their own frame rate (stills at ``--fps``), like a camera, so the rest of
the pipeline sees real-time behaviour; ``--lockstep`` drops the pacing and waits for the consumer
instead, for offline processing. Frames are resized to a working width once, here, so every later
stage handles a predictable size.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zmq

from common import protocol, sockets
from common.errors import FatalError
from common.runtime import Runtime
from common.stats import Stats

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_FRAMES = "tcp://127.0.0.1:5550"


@dataclass(frozen=True)
class CaptureConfig:
    source: str = "0"
    width: int = 640
    fps: float = 30.0
    loop: bool = False
    lockstep: bool = False
    bind: str = DEFAULT_FRAMES
    max_frames: int = 0
    stats_json: Path | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m capture",
        description="Read a camera, video, image or image folder; send frames to the compositor.",
    )
    p.add_argument("--source", default="0", help="camera index, video file, image file or folder")
    p.add_argument("--width", type=int, default=640, help="working width, aspect kept (0 = as is)")
    p.add_argument("--fps", type=float, default=30.0, help="rate for still images and folders")
    p.add_argument("--loop", action="store_true", help="repeat file sources forever")
    p.add_argument("--lockstep", action="store_true", help="no pacing, no drops (offline)")
    p.add_argument("--bind", default=DEFAULT_FRAMES, help="endpoint the compositor connects to")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = no limit)")
    p.add_argument("--stats-json", type=Path, default=None, help="write stats JSON here")
    return p


def parse(argv: Sequence[str] | None = None) -> CaptureConfig:
    a = build_parser().parse_args(argv)
    if a.width < 0 or (0 < a.width < 16):
        raise FatalError(f"--width {a.width} is too small (use 0 for the source's size, or >= 16)")
    if not 0 < a.fps <= 240:
        raise FatalError(f"--fps {a.fps} must be in (0, 240]")
    return CaptureConfig(
        a.source, a.width, a.fps, a.loop, a.lockstep, a.bind, a.max_frames, a.stats_json
    )


@dataclass(frozen=True)
class Source:
    """An opened source: frames (index, BGR image), rate, whether frames are unrelated stills."""

    frames: Iterator[tuple[int, np.ndarray]]
    fps: float
    still: bool
    live: bool  # a camera paces itself
    description: str


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in file-name order (what --save-alpha's indices refer to)."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def open_source(config: CaptureConfig, log) -> Source:
    """Open what --source names, or raise FatalError saying what is wrong and what to pass."""
    src = config.source
    if src.isdigit():
        return _open_camera(int(src))
    path = Path(src).expanduser()
    if not path.exists():
        raise FatalError(
            f"source {src!r} does not exist (pass a camera index like 0, a video file, "
            "an image file or a folder of images)"
        )
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise FatalError(
                f"folder {src!r} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "pass a folder with pictures, a video file or a camera index"
            )
        return Source(
            _folder_frames(files, config.loop, log),
            config.fps,
            True,
            False,
            f"{len(files)} images in {path}",
        )
    if not os.access(path, os.R_OK):
        raise FatalError(f"cannot read {src!r} (permission denied)")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FatalError(f"{src!r} is not a readable image (corrupt or not an image file)")
        return Source(_still_frames(image, config.loop), config.fps, True, False, f"image {path}")
    return _open_video(path, config.loop)


def _open_capture(target: int | str, error: str) -> tuple[cv2.VideoCapture, np.ndarray, float]:
    """Open a camera or video and read its first frame (the only reliable test that it works).

    Returns the capture, that frame and the frame rate (30 when the source reports none or
    nonsense); raises ``FatalError(error)`` if nothing can be read.
    """
    cap = cv2.VideoCapture(target)
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise FatalError(error)
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, first, fps if 1 <= fps <= 240 else 30.0


def _open_camera(index: int) -> Source:
    cap, first, fps = _open_capture(
        index,
        f"no camera at index {index} (none connected, or in use by another program); "
        "pass another index, or --source VIDEO_FILE / IMAGE / FOLDER",
    )

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        i = 0
        frame = first
        try:
            while frame is not None:
                yield i, frame
                i += 1
                ok, frame = cap.read()
                if not ok:
                    raise FatalError(f"camera {index} stopped delivering frames (unplugged?)")
        finally:
            cap.release()

    return Source(frames(), fps, False, True, f"camera {index}")


def _open_video(path: Path, loop: bool) -> Source:
    cap, first, fps = _open_capture(
        str(path),
        f"{str(path)!r} is not a readable video or image "
        "(corrupt, empty, or an unsupported format)",
    )

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        nonlocal cap
        i, frame = 0, first
        try:
            while True:
                while frame is not None:
                    yield i, frame
                    i += 1
                    ok, frame = cap.read()
                    if not ok:
                        frame = None
                if not loop or i == 0:
                    return
                cap.release()
                cap = cv2.VideoCapture(str(path))
                i = 0
                ok, frame = cap.read()
                if not ok:
                    return
        finally:
            cap.release()

    return Source(frames(), fps, False, False, f"video {path} ({fps:.2f} fps)")


def _still_frames(image: np.ndarray, loop: bool) -> Iterator[tuple[int, np.ndarray]]:
    yield 0, image
    while loop:
        yield 0, image


def _folder_frames(files: list[Path], loop: bool, log) -> Iterator[tuple[int, np.ndarray]]:
    while True:
        good = 0
        for i, f in enumerate(files):
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping %s: not a readable image", f)
                continue
            good += 1
            yield i, image
        if not loop or good == 0:
            return


def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """Scale to ``width`` keeping aspect (INTER_AREA when shrinking: no aliasing)."""
    h, w = image.shape[:2]
    if width == 0 or w == width:
        return image
    height = max(1, round(h * width / w))
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def run(config: CaptureConfig, rt: Runtime) -> int:
    """Send frames until the source ends, --max-frames, or a stop signal; then send END."""
    source = open_source(config, rt.log)
    stats = Stats("capture", rt.log, config.stats_json)
    stats.live = lambda: {"capture_fps": round(stats.rate("frames_captured"), 2)}
    sock = sockets.make_socket(rt.ctx, zmq.PUSH, bind=config.bind)
    stream = random.getrandbits(31)
    rt.log.info(
        "capturing %s -> %s%s",
        source.description,
        config.bind,
        " (lockstep)" if config.lockstep else "",
    )
    period = 1.0 / source.fps
    next_due = time.monotonic()
    frame_id = 0
    for index, image in source.frames:
        if rt.stopping():
            break
        if not (config.lockstep or source.live):
            # Pace file sources like a camera; the wait wakes up at once on a stop signal.
            delay = next_due - time.monotonic()
            if delay > 0 and rt.stop_event.wait(delay):
                break
            next_due = max(next_due + period, time.monotonic() - period)
        image = resize_to_width(image, config.width)
        parts = protocol.encode(
            protocol.FRAME,
            image,
            frame_id=frame_id,
            ts=time.time(),
            index=index,
            stream=stream,
            still=source.still,
            fps=source.fps,
        )
        if config.lockstep:
            if not sockets.send_blocking(sock, parts, rt.stopping):
                break
        elif not sockets.try_send(sock, parts):
            stats.count("frames_dropped")  # compositor behind or not there yet: never queue
        stats.count("frames_captured")
        frame_id += 1
        stats.tick(
            f"{stats.recent_rate('frames_captured'):.1f} fps, "
            f"{stats.counts['frames_captured']} sent, {stats.counts['frames_dropped']} dropped"
        )
        if config.max_frames and frame_id >= config.max_frames:
            break
    if not rt.stopping():
        # Tell downstream the stream is over (wait up to 2 s for the compositor to take it).
        deadline = time.monotonic() + 2.0
        end = protocol.encode(protocol.END, stream=stream, frame_id=frame_id - 1)
        sockets.send_blocking(sock, end, lambda: rt.stopping() or time.monotonic() > deadline)
        rt.log.info("source finished after %d frames", frame_id)
    stats.tick(force=True)
    sock.close(0)
    return 0

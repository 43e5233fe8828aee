"""Capture: read a camera, video file, still image or image folder and publish numbered frames.

File sources are paced at their own frame rate (stills at ``--fps``), like a camera, so the rest of
the pipeline sees real-time behaviour; ``--lockstep`` drops the pacing and waits for the consumer
instead, for offline processing. Frames are resized to a working width once, here, so every later
stage handles a predictable size.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zmq

from capture.config import CaptureConfig
from common import config as settings
from common import protocol, security, sockets
from common.config import OneLineParser
from common.errors import FatalError
from common.runtime import Runtime
from common.stats import Stats

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m capture",
        description="Read a camera, video, image or image folder; send frames to the compositor.",
    )
    settings.add_arguments(p, CaptureConfig)
    return p


def parse(argv: Sequence[str] | None = None) -> CaptureConfig:
    return settings.from_namespace(CaptureConfig, build_parser().parse_args(argv))


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
        return open_camera(int(src), config, log)
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
        return Source(still_frames(image), config.fps, True, False, f"image {path}")
    return _open_video(path, config.loop)


Opener = Callable[[int | str], cv2.VideoCapture]  # the edge a test replaces (no camera here)


def camera_requests(size: tuple[int, int] | None, fps: float | None) -> list[tuple[int, float]]:
    """The properties to ask a camera for (it may give something else; we log what it gave)."""
    out: list[tuple[int, float]] = []
    if size is not None:
        out += [(cv2.CAP_PROP_FRAME_WIDTH, size[0]), (cv2.CAP_PROP_FRAME_HEIGHT, size[1])]
    if fps is not None:
        out.append((cv2.CAP_PROP_FPS, fps))
    return out


def _open_capture(
    target: int | str,
    error: str,
    requests: list[tuple[int, float]] = (),  # type: ignore[assignment]
    opener: Opener = cv2.VideoCapture,
) -> tuple[cv2.VideoCapture, np.ndarray, float]:
    """Open a camera or video, ask for ``requests``, read its first frame (the only reliable
    test that it works).

    Returns the capture, that frame and the frame rate (30 when the source reports none or
    nonsense); raises ``FatalError(error)`` if nothing can be read.
    """
    cap = opener(target)
    if cap.isOpened():
        for prop, value in requests:
            cap.set(prop, value)
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise FatalError(error)
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, first, fps if 1 <= fps <= 240 else 30.0


def open_camera(
    index: int, config: CaptureConfig, log: logging.Logger, opener: Opener = cv2.VideoCapture
) -> Source:
    cap, first, fps = _open_capture(
        index,
        f"no camera at index {index} (none connected, or in use by another program); "
        "pass another index, or --source VIDEO_FILE / IMAGE / FOLDER",
        camera_requests(config.camera_size, config.camera_fps),
        opener,
    )
    asked = [f"{config.camera_size[0]}x{config.camera_size[1]}"] if config.camera_size else []
    asked += [f"{config.camera_fps:g} fps"] if config.camera_fps else []
    log.info(
        "camera %d gives %dx%d at %.2f fps%s",
        index,
        first.shape[1],
        first.shape[0],
        fps,
        f" (asked for {', '.join(asked)})" if asked else "",
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


def still_frames(image: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """A single picture is a camera that keeps showing it: until q or --max-frames, loop or not."""
    while True:
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
    """Shrink to ``width`` keeping aspect (INTER_AREA: no aliasing); never enlarge.

    A source narrower than ``width`` stays as it is: enlarging adds no detail, only cost.
    """
    h, w = image.shape[:2]
    if width == 0 or w <= width:
        return image
    height = max(1, round(h * width / w))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class Pacer:
    """Paces file sources like a camera; a stop signal wakes the wait at once."""

    def __init__(self, fps: float, rt: Runtime) -> None:
        self.period = 1.0 / fps
        self.rt = rt
        self.next_due = time.monotonic()

    def wait(self) -> bool:
        """Wait for the next frame's turn; False if asked to stop meanwhile."""
        delay = self.next_due - time.monotonic()
        if delay > 0 and self.rt.stop_event.wait(delay):
            return False
        self.next_due = max(self.next_due + self.period, time.monotonic() - self.period)
        return True


class Sender:
    """Numbers, stamps and sends frames of one stream; never queues (drops) unless lock-step."""

    def __init__(self, config: CaptureConfig, rt: Runtime, stats: Stats) -> None:
        link = security.link_key(config.link_keys)
        self.sock = sockets.make_socket(rt.ctx, zmq.PUSH, bind=config.bind, link=link)
        self.lockstep = config.lockstep
        self.rt = rt
        self.stats = stats
        self.stream = random.getrandbits(31)
        self.frame_id = 0

    def send(self, image: np.ndarray, index: int, source: Source) -> bool:
        """False if asked to stop while waiting for the compositor (lock-step)."""
        frame = protocol.Frame(
            frame_id=self.frame_id,
            ts=time.time(),
            stream=self.stream,
            index=index,
            still=source.still,
            fps=source.fps,
            image=image,
        )
        parts = protocol.encode(frame)
        if self.lockstep:
            if not sockets.send_blocking(self.sock, parts, self.rt.stopping):
                return False
        elif not sockets.try_send(self.sock, parts):
            self.stats.count("frames_dropped")  # compositor behind or not there yet: never queue
        self.stats.count("frames_captured")
        self.frame_id += 1
        return True

    def end(self) -> None:
        """Tell downstream the stream is over (wait up to 2 s for the compositor to take it)."""
        deadline = time.monotonic() + 2.0
        end = protocol.encode(protocol.End(stream=self.stream, frame_id=self.frame_id - 1))
        sockets.send_blocking(
            self.sock, end, lambda: self.rt.stopping() or time.monotonic() > deadline
        )

    def close(self) -> None:
        """Close the link; after a normal end, give queued frames and END up to 2 s to leave.

        Why: on ipc:// a close with no linger discards what is still queued, so the last frame
        and the END were lost and the display waited for its drain timeout.
        """
        self.sock.close(0 if self.rt.stopping() else 2000)


def run(config: CaptureConfig, rt: Runtime) -> int:
    """Send frames until the source ends, --max-frames, or a stop signal; then send END."""
    source = open_source(config, rt.log)
    stats = Stats("capture", rt.log, config.stats_json)
    stats.live = lambda: {"capture_fps": round(stats.rate("frames_captured"), 2)}
    sender = Sender(config, rt, stats)
    pacer = Pacer(source.fps, rt) if not (config.lockstep or source.live) else None
    rt.log.info(
        "capturing %s -> %s%s", source.description, config.bind, " (lockstep)" * config.lockstep
    )
    try:
        for index, image in source.frames:
            if rt.stopping() or (pacer is not None and not pacer.wait()):
                break
            if not sender.send(resize_to_width(image, config.width), index, source):
                break
            c = stats.counts
            stats.tick(
                f"{stats.recent_rate('frames_captured'):.1f} fps, "
                f"{c['frames_captured']} sent, {c['frames_dropped']} dropped"
            )
            if config.max_frames and sender.frame_id >= config.max_frames:
                break
        if not rt.stopping():
            sender.end()
            rt.log.info("source finished after %d frames", sender.frame_id)
    finally:
        stats.tick(force=True)
        sender.close()
    return 0

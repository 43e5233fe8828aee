"""Display: show the composited picture in a window ("Video Call"), record it, forward key presses.

``p`` toggles privacy (sent to the compositor, which owns the state), ``q`` or closing the window
quits the whole pipeline (the launcher stops everything when the display exits). The display
always shows the newest picture and drops older ones, so it never lags behind. When the compositor
hides the whole picture because no trustworthy mask exists (fail-closed), a small indicator says so.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zmq

from common import protocol, sockets
from common.errors import FatalError
from common.runtime import Runtime
from common.stats import Stats

WINDOW = "Video Call"
DEFAULT_IN = "tcp://127.0.0.1:5552"
DEFAULT_CONTROL = "tcp://127.0.0.1:5553"


@dataclass(frozen=True)
class DisplayConfig:
    connect: str = DEFAULT_IN
    control: str = DEFAULT_CONTROL
    headless: bool = False
    output: Path | None = None
    max_frames: int = 0
    idle_timeout: float = 0.0
    stats_json: Path | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m display",
        description="Show the privacy-mode picture: 'p' toggles privacy, 'q' quits.",
    )
    p.add_argument("--connect", default=DEFAULT_IN, help="the compositor's output endpoint")
    p.add_argument("--control", default=DEFAULT_CONTROL, help="the compositor's control endpoint")
    p.add_argument("--headless", action="store_true", help="no window (recording/stats only)")
    p.add_argument("--output", type=Path, default=None, help="record what is displayed (.mp4)")
    p.add_argument("--max-frames", type=int, default=0, help="quit after N frames (0 = never)")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="quit with an error if no picture arrives for this long (0 = wait)",
    )
    p.add_argument("--stats-json", type=Path, default=None, help="write stats JSON here")
    return p


def parse(argv: Sequence[str] | None = None) -> DisplayConfig:
    a = build_parser().parse_args(argv)
    if a.output is not None:
        if a.output.suffix.lower() not in (".mp4", ".avi", ".mkv"):
            raise FatalError(f"--output {a.output}: use a .mp4 (or .avi/.mkv) file name")
        if not a.output.parent.resolve().is_dir():
            raise FatalError(f"--output {a.output}: folder {a.output.parent} does not exist")
    if a.max_frames < 0 or a.idle_timeout < 0:
        raise FatalError("--max-frames and --idle-timeout must be >= 0")
    return DisplayConfig(
        a.connect, a.control, a.headless, a.output, a.max_frames, a.idle_timeout, a.stats_json
    )


def draw_fail_closed(image: np.ndarray) -> np.ndarray:
    """Small corner badge: 'background hidden, waiting for mask' (drawn on a copy)."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.35, w / 1600)
    r = max(4, w // 120)
    cv2.circle(out, (r * 2, r * 2), r, (0, 0, 255), -1, cv2.LINE_AA)
    cv2.putText(
        out,
        "background hidden: waiting for mask",
        (r * 4, r * 2 + r // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return out


class Recorder:
    """Writes displayed frames to a video; frames of another size are scaled to the first one's."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
        self.size = size
        self.writer = cv2.VideoWriter(str(path), fourcc, fps, size)
        if not self.writer.isOpened():
            raise FatalError(
                f"cannot write video {path} (codec unavailable or folder not writable)"
            )

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)

    def close(self) -> None:
        self.writer.release()


def run(config: DisplayConfig, rt: Runtime) -> int:
    frames = sockets.make_socket(rt.ctx, zmq.PULL, connect=config.connect)
    control = sockets.make_socket(rt.ctx, zmq.PUSH, connect=config.control, hwm=10)
    stats = Stats("display", rt.log, config.stats_json)
    privacy: bool | None = None
    stats.live = lambda: {
        "display_fps": round(stats.rate("frames_displayed"), 2),
        "privacy": privacy,
        "bad_messages": bad.count,
    }
    bad = sockets.BadMessages()
    recorder: Recorder | None = None
    window = not config.headless
    if window:
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
    last_frame_at = time.monotonic()
    code = 0
    try:
        while not rt.stopping():
            msg, ended = None, False
            if frames.poll(10 if window else 100):
                for parts in sockets.drain(frames):
                    m = sockets.decode_or_count(parts, bad, time.time())
                    if m is None:
                        continue
                    if m.kind == protocol.END:
                        ended = True
                    elif m.kind == protocol.OUTPUT and m.image is not None:
                        if msg is not None:
                            stats.count("frames_dropped")  # a newer one is here: show that
                        msg = m
            if msg is not None:
                last_frame_at = time.monotonic()
                h = msg.header
                image = msg.image
                if h.get("fail_closed"):
                    image = draw_fail_closed(image)
                if config.output is not None:
                    if recorder is None:
                        recorder = Recorder(
                            config.output,
                            float(h.get("fps") or 30.0),
                            (image.shape[1], image.shape[0]),
                        )
                    recorder.write(image)
                if window:
                    cv2.imshow(WINDOW, image)
                if h.get("privacy") != privacy:
                    privacy = h.get("privacy")
                    rt.log.info("privacy %s", "on" if privacy else "off")
                    if window:
                        cv2.setWindowTitle(
                            WINDOW, f"{WINDOW} - privacy {'on' if privacy else 'off'}"
                        )
                stats.count("frames_displayed")
                stats.sample("e2e_latency_ms", (time.time() - h["ts"]) * 1000)
                if config.max_frames and stats.counts["frames_displayed"] >= config.max_frames:
                    rt.log.info("displayed %d frames, done", config.max_frames)
                    break
            if window:
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), ord("Q"), 27):
                    rt.log.info("quit requested")
                    break
                if key in (ord("p"), ord("P")):
                    sockets.try_send(control, protocol.encode(protocol.CONTROL, privacy="toggle"))
                    rt.log.info("privacy toggle requested")
                shown = stats.counts["frames_displayed"] > 0
                if shown and cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    rt.log.info("window closed")
                    break
            if ended:
                rt.log.info("stream ended")
                break
            if config.idle_timeout and time.monotonic() - last_frame_at > config.idle_timeout:
                rt.log.error(
                    "no picture for %.0f s; is the compositor running?", config.idle_timeout
                )
                code = 3
                break
            lat = stats.series.get("e2e_latency_ms")
            stats.tick(
                f"{stats.recent_rate('frames_displayed'):.1f} fps, latency "
                f"{lat[-1] if lat else float('nan'):.0f} ms, {stats.counts['frames_displayed']}"
                f" shown, {stats.counts['frames_dropped']} dropped"
            )
    finally:
        if recorder is not None:
            recorder.close()
        if window:
            cv2.destroyAllWindows()
        stats.tick(force=True)
        frames.close(0)
        control.close(0)
    return code

"""Display's settings (no OpenCV import: the launcher reads them to build the command line)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from common.config import option, require
from common.endpoints import DEFAULTS

AUTO_DEVICE = "auto"  # --virtual-camera without a device name: the first free one
RECORDING_SUFFIXES = (".mp4", ".avi", ".mkv")


def is_endpoint(text: str) -> bool:
    """tcp://HOST:PORT, ipc://PATH or inproc://NAME (zmq refuses anything else with a traceback)."""
    if text.startswith(("ipc://", "inproc://")):
        return len(text.split("://", 1)[1]) > 0
    if not text.startswith("tcp://"):
        return False
    host, _, port = text[len("tcp://") :].rpartition(":")
    return bool(host) and (port == "*" or (port.isdigit() and 0 < int(port) < 65536))


def _check_file(flag: str, path: Path | None) -> None:
    if path is not None:
        require(
            path.name != "" and path.parent.resolve().is_dir(),
            f"{flag} {path}: folder {path.parent} does not exist",
        )


@dataclass(frozen=True)
class DisplayConfig:
    """Where pictures come from, where key presses go, what to show, record and send to a call."""

    connect: str = option(DEFAULTS.out, "the compositor's output endpoint")
    control: str = option(DEFAULTS.control, "the compositor's control endpoint")
    headless: bool = option(False, "no window (recording, virtual camera, stats only)")
    output: Path | None = option(
        None, "record the call picture (.mp4: crash-safe fragmented MP4; .avi/.mkv: not)"
    )
    virtual_camera: str | None = option(
        None,
        "send the call picture to a virtual camera: DEVICE (e.g. /dev/video10) or, without one, "
        "the first free v4l2loopback / OBS device",
        const=AUTO_DEVICE,
        metavar="DEVICE",
    )
    mirror: bool = option(False, "mirror the self-view window (the call and recording are not)")
    max_frames: int = option(0, "quit after N frames (0 = never)")
    stale_after: float = option(
        0.5, "no picture for this long (compositor gone): show the last one fully hidden"
    )
    idle_timeout: float = option(
        0.0, "quit with an error if no picture arrives this long (0 = wait)"
    )
    link_keys: Path | None = option(
        None, "this run's key for TCP links between stages (the launcher makes it with --links tcp)"
    )
    stats_json: Path | None = option(None, "write stats JSON here")

    def __post_init__(self) -> None:
        for flag, value in (("--connect", self.connect), ("--control", self.control)):
            require(is_endpoint(value), f"{flag} {value!r}: use tcp://HOST:PORT or ipc://PATH")
        if self.output is not None:
            require(
                self.output.suffix.lower() in RECORDING_SUFFIXES,
                f"--output {self.output}: use a .mp4 (or .avi/.mkv) file name",
            )
        _check_file("--output", self.output)
        _check_file("--stats-json", self.stats_json)
        require(self.virtual_camera != "", "--virtual-camera: name a device or leave it out")
        require(self.max_frames >= 0, "--max-frames must be >= 0")
        require(
            math.isfinite(self.stale_after) and 0.05 <= self.stale_after <= 60,
            f"--stale-after {self.stale_after} must be in [0.05, 60] seconds",
        )
        require(
            math.isfinite(self.idle_timeout) and self.idle_timeout >= 0,
            "--idle-timeout must be >= 0 seconds",
        )

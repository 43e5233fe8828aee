"""Display's settings (no OpenCV import: the launcher reads them to build the command line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import option, require
from common.endpoints import DEFAULTS


@dataclass(frozen=True)
class DisplayConfig:
    """Where pictures come from, where key presses go, what to show and record."""

    connect: str = option(DEFAULTS.out, "the compositor's output endpoint")
    control: str = option(DEFAULTS.control, "the compositor's control endpoint")
    headless: bool = option(False, "no window (recording/stats only)")
    output: Path | None = option(None, "record what is displayed (.mp4, .avi or .mkv)")
    max_frames: int = option(0, "quit after N frames (0 = never)")
    idle_timeout: float = option(
        0.0, "quit with an error if no picture arrives this long (0 = wait)"
    )
    stats_json: Path | None = option(None, "write stats JSON here")

    def __post_init__(self) -> None:
        if self.output is not None:
            require(
                self.output.suffix.lower() in (".mp4", ".avi", ".mkv"),
                f"--output {self.output}: use a .mp4 (or .avi/.mkv) file name",
            )
            require(
                self.output.parent.resolve().is_dir(),
                f"--output {self.output}: folder {self.output.parent} does not exist",
            )
        require(self.max_frames >= 0, "--max-frames must be >= 0")
        require(self.idle_timeout >= 0, "--idle-timeout must be >= 0")

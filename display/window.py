"""The self-view window "Video Call" (OpenCV's Qt highgui): show, read keys, retitle, closed?

Only this module touches highgui. The call picture never passes through here unchanged: what the
window draws (badge, overlay, mirroring) is made by ``display.picture.window_picture``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

TITLE = "Video Call"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"))


def has_display(environ: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Can a window open here? (Linux and BSDs need an X or Wayland display; others always can.)"""
    if platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))
    return True


def quiet_qt(environ: dict[str, str] = os.environ) -> None:  # type: ignore[assignment]
    """Silence Qt's "Cannot find font directory .../cv2/qt/fonts" lines (one per text draw).

    ``import cv2`` points QT_QPA_FONTDIR at a folder the wheel does not ship, so this must run
    after that import and before the first window: point it at a folder that exists.
    """
    fonts = next((d for d in FONT_DIRS if os.path.isdir(d)), tempfile.gettempdir())
    environ["QT_QPA_FONTDIR"] = fonts


# keys -> what they mean in the window
KEYS = {ord("q"): "quit", ord("Q"): "quit", 27: "quit", ord("p"): "privacy", ord("P"): "privacy"}
KEYS.update({ord("s"): "stats", ord("S"): "stats", ord("m"): "mask", ord("M"): "mask"})


class Window:
    """One highgui window; ``poll()`` returns the action of the key pressed, if any."""

    def __init__(self) -> None:
        quiet_qt()
        cv2.namedWindow(TITLE, cv2.WINDOW_AUTOSIZE)
        self.shown = False
        self.title = TITLE

    def show(self, image: np.ndarray) -> None:
        cv2.imshow(TITLE, image)
        self.shown = True

    def retitle(self, title: str) -> None:
        if title != self.title:
            cv2.setWindowTitle(TITLE, title)
            self.title = title

    def poll(self) -> str | None:
        return KEYS.get(cv2.waitKey(1) & 0xFF)

    def closed(self) -> bool:
        return self.shown and cv2.getWindowProperty(TITLE, cv2.WND_PROP_VISIBLE) < 1

    def close(self) -> None:
        cv2.destroyAllWindows()

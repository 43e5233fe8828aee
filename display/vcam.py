"""The virtual camera: the call picture goes to a video device any call app can pick as its camera.

Through pyvirtualcam (v4l2loopback on Linux, OBS Virtual Camera on Windows/macOS). The device is
opened with the first picture's size and the pipeline's rate, so both follow the pipeline; later
pictures of another size are scaled to it (a device cannot change size while an app reads it).
The picture is the call picture: never mirrored, no badge, no overlay.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np

from common.errors import FatalError
from display.config import AUTO_DEVICE


class Device(Protocol):
    def send(self, rgb: np.ndarray) -> None: ...
    def close(self) -> None: ...


Opener = Callable[[int, int, float, str | None], Device]


def how_to_create() -> str:
    if sys.platform.startswith("linux"):
        return (
            "create one with: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
            "card_label=privacycam"
        )
    return "install OBS Studio and start its Virtual Camera once"


def open_pyvirtualcam(width: int, height: int, fps: float, device: str | None) -> Device:
    """The real device (pyvirtualcam, RGB frames); FatalError with what to do if there is none."""
    try:
        import pyvirtualcam
    except ImportError:
        raise FatalError(
            "--virtual-camera needs pyvirtualcam: python -m pip install pyvirtualcam"
        ) from None
    try:
        cam: Any = pyvirtualcam.Camera(
            width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device
        )
    except (RuntimeError, ValueError, OSError) as exc:
        where = device or "any device"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FatalError(f"no virtual camera ({where}: {first}); {how_to_create()}") from None
    return cam


class VirtualCamera:
    """Sends call pictures to a device opened on the first one (size and rate follow it)."""

    def __init__(self, device: str, opener: Opener = open_pyvirtualcam) -> None:
        self.device = None if device == AUTO_DEVICE else device
        self.opener = opener
        self.cam: Device | None = None
        self.size: tuple[int, int] = (0, 0)
        self.sent = 0

    def send(self, bgr: np.ndarray, fps: float) -> None:
        if self.cam is None:
            self.size = (bgr.shape[1], bgr.shape[0])
            self.cam = self.opener(self.size[0], self.size[1], fps, self.device)
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.cam.send(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # the one conversion per frame
        self.sent += 1

    def close(self) -> None:
        if self.cam is not None:
            self.cam.close()
            self.cam = None

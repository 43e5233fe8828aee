"""The virtual camera path of the display, with the device replaced by a recording double.

No kernel module (v4l2loopback) can be loaded here, so the device is the one thing replaced: the
double is injected at the edge (``display.run.run(..., opener=...)``, where pyvirtualcam.Camera
would be opened). Everything else is real: the display's loop runs in this process with real zmq
sockets, and the test plays the compositor. The real, absent device is tested in
test_display_process.py.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import zmq

from common.runtime import Runtime
from display.config import DisplayConfig
from display.run import run
from tests.test_display_process import FPS, FakeCompositor


class RecordingDevice:
    """What pyvirtualcam.Camera would be: records every frame with the time it came."""

    def __init__(self, width: int, height: int, fps: float, device: str | None) -> None:
        self.opened_with = (width, height, fps, device)
        self.frames: list[tuple[float, np.ndarray]] = []
        self.closed = False

    def send(self, rgb: np.ndarray) -> None:
        self.frames.append((time.monotonic(), rgb.copy()))

    def close(self) -> None:
        self.closed = True


def test_virtual_camera_gets_rgb_frames_at_camera_rate_right_size_not_mirrored(port_base):
    comp = FakeCompositor(port_base)
    devices: list[RecordingDevice] = []

    def opener(width, height, fps, device):
        devices.append(RecordingDevice(width, height, fps, device))
        return devices[-1]

    config = DisplayConfig(
        connect=f"tcp://127.0.0.1:{port_base + 2}",
        control=f"tcp://127.0.0.1:{port_base + 3}",
        headless=True,
        mirror=True,  # the self-view only: the call picture must stay as it is
        virtual_camera="auto",
    )
    ctx = zmq.Context()
    rt = Runtime(name="display", log=logging.getLogger("display"), ctx=ctx)
    result: list[int] = []
    stage = threading.Thread(target=lambda: result.append(run(config, rt, opener)))
    stage.start()
    picture = np.zeros((360, 640, 3), np.uint8)
    picture[:, :320] = (255, 0, 0)  # BGR: left half blue
    picture[:, 320:] = (0, 0, 255)  # right half red
    try:
        comp.wait_for_display()
        sent = comp.play([picture] * 90)  # 3 s at the camera's 30 fps
        comp.end()
        stage.join(30)
    finally:
        rt.stop()
        stage.join(10)
        comp.close()
        ctx.destroy(linger=0)
    assert result == [0]
    [dev] = devices
    assert dev.opened_with == (640, 360, FPS, None) and dev.closed
    # Most pictures: the display keeps only the newest, and here it shares this process (and its
    # GIL) with the test playing the compositor, so a slow host merges some (85 of 90 in one full
    # run, fewer than 81 in another). That the camera gets the call at the camera's rate, all the
    # way through, is what the gaps and the span below check.
    assert len(dev.frames) >= 0.66 * sent
    times = [t for t, _ in dev.frames]
    assert times[-1] - times[0] >= 0.8 * (sent - 1) / FPS  # frames until the end of the play
    for _, rgb in dev.frames:
        assert rgb.shape == (360, 640, 3)
        assert (rgb[:, :320] == (0, 0, 255)).all()  # RGB order: blue is (0, 0, 255) ...
        assert (rgb[:, 320:] == (255, 0, 0)).all()  # ... on the left: not mirrored
    # The camera's rate is the rate the pictures came at: on a slow host this process's "camera"
    # itself falls below 30 fps, which is not the display's doing.
    gaps = float(np.median(np.diff(times)))
    came = float(np.median(np.diff(comp.sent_at)))
    assert 0.8 * came < gaps < 1.25 * came, (gaps, came)
    assert came > 0.8 / FPS  # the pictures did come paced, not in one burst

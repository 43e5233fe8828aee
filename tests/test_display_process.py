"""The display as a real process, with the test playing the compositor (real zmq sockets speaking
common.protocol): hiding the picture while the compositor is gone, a recording that survives
kill -9, no virtual camera device, one-line errors for bad flags.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from common import protocol
from tests.conftest import REPO, env, wait_for

FPS = 30.0


class FakeCompositor:
    """The compositor's two display-side sockets, bound where the display connects."""

    def __init__(self, port_base: int) -> None:
        self.ctx = zmq.Context()
        self.out = self.ctx.socket(zmq.PUSH)
        self.out.setsockopt(zmq.LINGER, 0)
        self.out.setsockopt(zmq.IMMEDIATE, 1)  # POLLOUT only once the display is connected
        self.out.bind(f"tcp://127.0.0.1:{port_base + 2}")
        self.control = self.ctx.socket(zmq.PULL)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.bind(f"tcp://127.0.0.1:{port_base + 3}")
        self.frame_id = 0
        self.sent_at: list[float] = []  # when each picture went out (time.monotonic)

    def wait_for_display(self, timeout: float = 60.0) -> None:
        if not self.out.poll(int(timeout * 1000), zmq.POLLOUT):
            raise AssertionError(f"the display did not connect within {timeout} s")

    def send(self, image: np.ndarray, **fields) -> bool:
        msg = protocol.Output(
            frame_id=self.frame_id, ts=time.time(), fps=FPS, image=image, **fields
        )
        self.frame_id += 1
        if not self._send(protocol.encode(msg)):
            return False
        self.sent_at.append(time.monotonic())
        return True

    def end(self) -> bool:
        return self._send(protocol.encode(protocol.End(frame_id=self.frame_id - 1)))

    def _send(self, parts: list) -> bool:
        if not self.out.poll(5000, zmq.POLLOUT):
            return False
        self.out.send_multipart(parts, copy=False)
        return True

    def play(self, images, seconds_per_frame: float = 1 / FPS, **fields) -> int:
        """Send pictures at the camera rate, as a camera does: deadline-paced (sleeps do not add
        up), and after a stall of this process the ticks resume without catching up. A burst of
        late pictures 2 ms apart is not what a camera sends, and it made a slow host look like a
        display that runs too fast (CI, 2026-11-22: median gap 6.8 ms).
        """
        due = time.monotonic()
        sent = 0
        for image in images:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the camera's pace, not a wait for the display
            sent += self.send(image, **fields)
            due = max(due, time.monotonic()) + seconds_per_frame
        return sent

    def controls(self, timeout: float) -> list[protocol.Control | protocol.View]:
        got = []
        kinds = (protocol.Control, protocol.View)
        if self.control.poll(int(timeout * 1000)):
            while self.control.poll(0):
                got.append(protocol.decode(self.control.recv_multipart(), kinds))
        return got

    def silent(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a crashed compositor), still reading key presses."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.controls(min(0.1, max(0.0, until - time.monotonic())))

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def start_display(tmp_path: Path, port_base: int, *args, extra_env=None) -> subprocess.Popen:
    log = open(tmp_path / "display.log", "w")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "display",
            "--connect",
            f"tcp://127.0.0.1:{port_base + 2}",
            "--control",
            f"tcp://127.0.0.1:{port_base + 3}",
            *map(str, args),
        ],
        cwd=REPO,
        env=dict(env(), **(extra_env or {})),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def numbered(n: int, size=(360, 640)) -> np.ndarray:
    """A picture whose grey level says its number (survives JPEG) with sharp text on it."""
    image = np.full((*size, 3), n % 150, np.uint8)
    cv2.putText(image, "SECRET 42", (40, 200), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 6)
    return image


def number_of(image: np.ndarray) -> int:
    return round(float(np.median(image[300:, :, 1])))


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture
def compositor(port_base):
    c = FakeCompositor(port_base)
    yield c
    c.close()


@pytest.fixture
def stop(request):
    started: list[subprocess.Popen] = []
    yield started.append
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_compositor_gone_shows_last_picture_hidden_then_new_ones(
    tmp_path, port_base, compositor, stop
):
    rec = tmp_path / "rec.mp4"
    p = start_display(tmp_path, port_base, "--headless", "--output", rec)
    stop(p)
    compositor.wait_for_display()
    assert compositor.play([numbered(i) for i in range(30)]) == 30
    # the compositor "crashes": nothing for 1.5 s (the display must hide after ~0.5 s)
    log = tmp_path / "display.log"
    wait_for(lambda: "showing the last one hidden" in log.read_text(), 10, "the hide log line")
    compositor.silent(1.0)  # the outage goes on for another second (scenario time, no wait)
    assert compositor.play([numbered(100 + i) for i in range(30)]) == 30
    assert compositor.end()
    assert p.wait(30) == 0, log.read_text()
    frames = read_all(rec)
    sharp = [sharpness(f) > 50 for f in frames]
    first_hidden = sharp.index(False)
    back = first_hidden + sharp[first_hidden:].index(True)
    assert first_hidden >= 25  # the pictures before the outage, as they came
    assert back - first_hidden >= 20  # ~1.5 s of hidden frames at the camera rate (~45)
    assert all(sharp[back:])  # and the new pictures again once the compositor is back
    assert number_of(frames[back]) >= 100
    hidden = frames[first_hidden + 5]
    assert max(sharpness(f) for f in frames[first_hidden:back]) < 0.01 * sharpness(frames[0])
    assert abs(float(hidden.mean()) - 0.6 * float(frames[first_hidden - 1].mean())) < 20


def test_recording_survives_kill_9(tmp_path, port_base, compositor, stop):
    rec = tmp_path / "rec.mp4"
    p = start_display(tmp_path, port_base, "--headless", "--output", rec)
    stop(p)
    compositor.wait_for_display()
    sent = compositor.play([numbered(i) for i in range(120)])  # 4 s at 30 fps
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    frames = read_all(rec)
    numbers = [number_of(f) for f in frames]
    print(f"kill -9 after {sent} frames sent: {len(frames)} read back, last {numbers[-1]}")
    assert numbers == sorted(numbers) and len(frames) >= 60
    assert numbers[-1] >= 119 - FPS  # at most the last second is lost
    cap = cv2.VideoCapture(str(rec))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == len(frames)  # the header knows its length
    assert "stays playable if the display is killed" in (tmp_path / "display.log").read_text()


def test_no_virtual_camera_device_is_one_line_and_non_zero(tmp_path, port_base, compositor, stop):
    # real pyvirtualcam, real (absent) device: no v4l2loopback module is loaded on this machine
    pytest.importorskip("pyvirtualcam")
    p = start_display(tmp_path, port_base, "--headless", "--virtual-camera")
    stop(p)
    compositor.wait_for_display()
    deadline = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < deadline:
        compositor.send(numbered(0))
        try:
            p.wait(0.1)
        except subprocess.TimeoutExpired:
            pass
    assert p.wait(10) == 2
    text = (tmp_path / "display.log").read_text()
    errors = [line for line in text.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in text, text
    assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1" in errors[0]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--max-frames", "-1"], "--max-frames"),
        (["--max-frames", "lots"], "invalid int"),
        (["--stale-after", "nan"], "--stale-after"),
        (["--idle-timeout", "-3"], "--idle-timeout"),
        (["--output", "rec.gif"], ".mp4"),
        (["--output", "/no/such/dir/rec.mp4"], "does not exist"),
        (["--stats-json", "/no/such/dir/s.json"], "does not exist"),
        (["--connect", "garbage"], "tcp://HOST:PORT"),
        (["--control", "tcp://127.0.0.1:99999"], "tcp://HOST:PORT"),
        (["--no-such-flag"], "unrecognized"),
    ],
)
def test_bad_flags_are_one_line(args, says, capsys):
    from common.runtime import main
    from display.run import parse, run

    assert main("display", parse, run, ["--headless", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("display: error: ") and says in err[0], err


def test_no_display_is_one_line_before_any_qt(tmp_path):
    e = env()
    e.pop("DISPLAY", None)
    e.pop("WAYLAND_DISPLAY", None)
    r = subprocess.run(
        [sys.executable, "-m", "display"], cwd=REPO, env=e, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "display: error: no display: use --headless or --virtual-camera"
    assert r.stdout == ""

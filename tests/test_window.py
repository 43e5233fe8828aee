"""The real window under Xvfb, driven by xdotool; the test plays the compositor with real zmq
sockets (common.protocol). 'p' sends a privacy toggle, 's' toggles the stats overlay, 'm' asks for
the mask view, 'q' quits;
the fail-closed badge is in the window only, never in the recording; Qt prints no font warnings.
"""

import os
import subprocess

import numpy as np

from common import protocol
from tests.conftest import wait_for
from tests.test_display_process import FakeCompositor, read_all, start_display


def _xdotool(display: str, *args: str) -> str:
    return subprocess.run(
        ["xdotool", *args],
        env=dict(os.environ, DISPLAY=display),
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout


def _picture() -> np.ndarray:
    image = np.full((360, 640, 3), 120, np.uint8)
    image[:, :320] = (200, 60, 20)
    return image


def test_window_keys_badge_and_quit(xdisplay, tmp_path, port_base):
    comp = FakeCompositor(port_base)
    rec = tmp_path / "rec.mp4"
    # The test sends pictures only between its key presses; under load a pause can pass 0.5 s,
    # and the display would rightly record the picture hidden (tests/test_display_process.py
    # covers that rule). Here the recording must hold the call picture itself.
    proc = start_display(
        tmp_path, port_base, "--output", rec, "--mirror", "--stale-after", "30",
        extra_env={"DISPLAY": xdisplay},
    )  # fmt: skip
    log = tmp_path / "display.log"
    try:
        comp.wait_for_display()

        def send(**fields) -> bool:
            comp.send(_picture(), **fields)
            return True

        window = wait_for(
            lambda: (
                send(privacy=True, fail_closed=True, hidden="stale")
                and _xdotool(xdisplay, "search", "--name", "Video Call").split()
            ),
            30,
            "the 'Video Call' window",
        )[0]
        wait_for(lambda: "privacy on" in log.read_text(), 30, "first pictures shown")
        _xdotool(xdisplay, "windowfocus", "--sync", window)  # no window manager: focus directly
        _xdotool(xdisplay, "key", "p")
        got: list = []
        wait_for(
            lambda: send(privacy=True) and got.extend(comp.controls(0.1)) or got,
            15,
            "the privacy toggle to reach the compositor",
        )
        assert got == [protocol.Control(privacy="toggle")]
        # the compositor switches privacy off: the display retitles its window
        wait_for(
            lambda: (
                send(privacy=False) and "privacy off" in _xdotool(xdisplay, "getwindowname", window)
            ),
            15,
            "the window title to say privacy off",
        )
        _xdotool(xdisplay, "key", "s")
        wait_for(
            lambda: send(privacy=False) and "stats overlay on" in log.read_text(),
            15,
            "the stats overlay",
        )
        # 'm': the display asks the compositor for the alpha; with it, the window shows the mask
        # view (tinted; the recording below must not have it)
        _xdotool(xdisplay, "key", "m")
        alpha = np.zeros((360, 640), np.uint8)
        alpha[:, :320] = 255
        views: list = []
        wait_for(
            lambda: send(privacy=False) and views.extend(comp.controls(0.1)) or views,
            15,
            "the mask view request",
        )
        assert views[0] == protocol.View(mask=True)
        wait_for(
            lambda: send(privacy=True, alpha=alpha) and "mask view on" in log.read_text(),
            15,
            "the mask view",
        )
        for _ in range(5):
            send(privacy=True, alpha=alpha)
        _xdotool(xdisplay, "key", "q")
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        comp.close()
    text = log.read_text()
    assert "quit requested" in text
    assert "QFont" not in text and "fonts" not in text, text  # no Qt font warnings
    frames = read_all(rec)
    assert len(frames) >= 3
    for frame in frames:  # the recording has the call picture: no badge (no red dot), not mirrored
        red = (frame[..., 2] > 200) & (frame[..., 1] < 80) & (frame[..., 0] < 80)
        assert not red.any()
        assert np.abs(frame.astype(int) - _picture().astype(int)).mean() < 3

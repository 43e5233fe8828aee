"""The real window under Xvfb: 'p' toggles privacy, 'q' quits, and every process is gone after."""

import json
import os
import subprocess
import sys

from tests.conftest import ANCHOR, REPO, SELFIE, env, wait_for


def _xdotool(display: str, *args: str) -> str:
    return subprocess.run(
        ["xdotool", *args],
        env=dict(os.environ, DISPLAY=display),
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout


def _pids_on(port_base: int) -> list[str]:
    r = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port_base}"], capture_output=True, text=True)
    return r.stdout.split()


def test_window_keys_toggle_privacy_and_quit(xdisplay, tmp_path, port_base):
    log = tmp_path / "launch.log"
    stats = tmp_path / "s.json"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "launch.py",
                "--source",
                str(ANCHOR),
                "--loop",
                "--model",
                "selfie",
                "--model-dir",
                str(SELFIE),
                "--port-base",
                str(port_base),
                "--stats-json",
                str(stats),
            ],
            cwd=REPO,
            env=dict(env(), DISPLAY=xdisplay),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        window = wait_for(
            lambda: _xdotool(xdisplay, "search", "--name", "Video Call").split(),
            30,
            "the 'Video Call' window",
        )[0]
        wait_for(
            lambda: "display | " in log.read_text() and "privacy on" in log.read_text(),
            30,
            "first frames shown with privacy on",
        )
        assert "privacy off" not in log.read_text()
        # no window manager under Xvfb: focus the window directly, then type
        _xdotool(xdisplay, "windowfocus", "--sync", window)
        _xdotool(xdisplay, "key", "p")
        wait_for(
            lambda: "privacy off" in log.read_text().split("privacy toggle requested")[-1],
            15,
            "compositor and display to report privacy off",
        )
        # the display retitles its window when the first frame composited without privacy arrives
        wait_for(
            lambda: "privacy off" in _xdotool(xdisplay, "getwindowname", window),
            15,
            "the window title to say privacy off",
        )
        _xdotool(xdisplay, "key", "q")
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "quit requested" in text
    assert json.loads(stats.read_text())["stages"]["display"]["privacy"] is False
    assert _pids_on(port_base) == [], "stage processes left behind"

"""The display's pure rules and its recording file (the window is tested in test_window.py, the
process in test_display_process.py)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from common import protocol
from display import picture
from display.mp4 import FragmentedMp4
from display.window import has_display


def _frame(value: int = 90) -> np.ndarray:
    frame = np.full((360, 640, 3), value, np.uint8)
    frame.flags.writeable = False  # frames from the wire are read-only views
    return frame


def _output(**fields) -> protocol.Output:
    return protocol.Output(frame_id=1, ts=1.0, image=_frame(), **fields)


def test_badge_is_small_red_and_drawn_on_a_copy():
    frame = _frame()
    out = picture.draw_badge(frame, "hidden: masks too old")
    assert (frame == 90).all()
    red = (out[..., 2] > 200) & (out[..., 1] < 60) & (out[..., 0] < 60)
    ys, xs = np.nonzero(red)
    assert len(ys) > 20  # the dot is there ...
    assert ys.max() < 40 and xs.max() < 40  # ... in the top-left corner
    changed = np.any(out != frame, axis=2)
    assert changed.mean() < 0.05  # and the badge covers little of the picture


@pytest.mark.parametrize(
    "hidden, text",
    [
        ("waiting", "waiting for the first mask"),
        ("stale", "masks too old"),
        ("mismatch", "mask does not fit the picture"),
    ],
)
def test_badge_says_why_the_picture_is_hidden(hidden, text):
    assert picture.badge_text(_output(fail_closed=True, hidden=hidden)) == f"hidden: {text}"


def test_no_badge_when_nothing_is_hidden():
    assert picture.badge_text(_output(fail_closed=False)) is None


def test_stale_rule():
    assert not picture.is_stale(None, 100.0)  # nothing shown yet: nothing to hide
    assert not picture.is_stale(10.0, 10.49)
    assert picture.is_stale(10.0, 10.5)
    assert picture.is_stale(10.0, 11.0, after=1.0)


def test_hidden_picture_keeps_no_detail():
    rng = np.random.default_rng(1)
    face = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    cv2.putText(face, "SECRET", (20, 220), cv2.FONT_HERSHEY_SIMPLEX, 5, (255, 255, 255), 12)
    hidden = picture.hide(face)
    assert hidden.shape == face.shape

    def detail(im):
        return cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()

    assert detail(hidden) < 0.001 * detail(face)
    # two different pictures with the same colours hide to nearly the same thing
    other = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    assert np.abs(picture.hide(other).astype(int) - picture.hide(face).astype(int)).mean() < 10


def test_window_extras_never_touch_the_call_picture():
    call = np.zeros((360, 640, 3), np.uint8)
    call[:, :320] = (255, 0, 0)  # left half blue
    call.flags.writeable = False
    look = picture.Look(
        badge="hidden: masks too old", stats=picture.Readings(30.0, 12.0, 80.0), mirror=True
    )
    shown = picture.window_picture(call, look)
    assert (call[:, :320] == (255, 0, 0)).all() and (call[:, 320:] == 0).all()
    assert (shown[100:200, 400:600] == (255, 0, 0)).all()  # mirrored: blue is on the right
    assert (shown[100:200, 40:300] == 0).all()
    assert picture.stats_lines(picture.Readings(29.96, None, 80.4, 0.456)) == [
        "display 30.0 fps",
        "masks 0.46/s",
        "latency -",
        "mask age 80 ms",
    ]


def test_mask_view_tints_what_the_mask_keeps_and_stays_in_the_window():
    call = np.full((360, 640, 3), 100, np.uint8)
    call.flags.writeable = False
    alpha = np.zeros((360, 640), np.uint8)
    alpha[:, :200] = 255  # the person on the left
    alpha.flags.writeable = False
    shown = picture.window_picture(call, picture.Look(alpha=alpha, mirror=True))
    assert (call == 100).all() and (alpha[:, :200] == 255).all()  # inputs untouched
    person, room = shown[200:, 460:620].astype(int), shown[200:, 40:400].astype(int)  # mirrored
    assert (person[..., 1] - person[..., 0] > 100).all()  # green where the mask keeps the person
    assert (room == 50).all()  # the rest dimmed, not tinted
    assert (shown[:40, :40, 2] > 200).any()  # the "mask view" badge (red dot) says what this is
    # an alpha that does not fit the picture (another camera mode) is not drawn
    odd = picture.window_picture(call, picture.Look(alpha=np.zeros((10, 10), np.uint8)))
    assert (odd == 100).all()


def test_has_display():
    assert not has_display({}, "linux")
    assert has_display({"DISPLAY": ":1"}, "linux")
    assert has_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert has_display({}, "win32")


def test_mp4_recording_reads_back_every_frame_in_order(tmp_path: Path):
    path = tmp_path / "r.mp4"
    rec = FragmentedMp4(path, 25.0, (320, 180))
    for i in range(40):
        rec.add(np.full((360, 640, 3), i * 5, np.uint8), now=i / 25)  # scaled to the first size
    rec.close()
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 40
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    levels = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (180, 320, 3)
        levels.append(round(float(frame.mean()) / 5))
    assert levels == list(range(40))

"""The fail-closed indicator the display draws (the window itself is tested in test_window.py)."""

import numpy as np

from display.run import draw_fail_closed


def test_fail_closed_badge_is_small_red_and_drawn_on_a_copy():
    frame = np.full((360, 640, 3), 90, np.uint8)
    frame.flags.writeable = False  # frames from the wire are read-only views
    out = draw_fail_closed(frame)
    assert (frame == 90).all()
    red = (out[..., 2] > 200) & (out[..., 1] < 60) & (out[..., 0] < 60)
    ys, xs = np.nonzero(red)
    assert len(ys) > 20  # the dot is there ...
    assert ys.max() < 40 and xs.max() < 40  # ... in the top-left corner
    changed = np.any(out != frame, axis=2)
    assert changed.mean() < 0.05  # and the badge covers little of the picture

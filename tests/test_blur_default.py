"""The default blur hides large text on the wall behind the person (issue 11).

Why a grating: reading a letter needs about two cycles of contrast per letter height (letter
identification works in a band of 1.5-3 cycles per letter), so text of height h is unreadable once
a grating of period h/2 keeps no more contrast than camera noise (1 %: ~2 grey levels for
black-on-white). "Large" text here is a quarter of the frame high (of its shorter side), e.g. a
poster or a label; the rule must hold for every camera size and aspect, not only 640x360.
"""

import numpy as np
import pytest

from compositor import compose
from compositor.config import CompositorConfig

H, W = 360, 640


def contrast_left(blur: float, period: float, h: int = H, w: int = W) -> float:
    """Share of a vertical grating's contrast the blurred background keeps (frame centre)."""
    x = np.arange(w)
    g = 128 + 100 * np.sin(2 * np.pi * x / period)
    img = np.repeat(np.repeat(g[None, :, None], h, 0), 3, 2).astype(np.uint8)
    state = compose.new_state(compose.ComposeSettings(blur=blur))
    compose.accept_mask(state, np.zeros((h, w), np.uint8), img, continuous=False)
    out = compose.render(state, img, privacy=True, mask_ok=True).image
    centre = out[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 1].astype(float)
    return (centre.max() - centre.min()) / 2 / 100


@pytest.mark.parametrize(
    "h, w", [(360, 640), (480, 854), (1080, 1920), (480, 640), (960, 1280), (640, 360)]
)
def test_default_blur_hides_text_a_quarter_of_the_frame_high(h, w):
    """16:9 at three sizes, 4:3 at two, and a portrait frame. Before the blur was scaled with
    the shorter side, 640x480 kept 8 % (the width-scaled blur was a third weaker there)."""
    letter = min(h, w) / 4
    assert contrast_left(CompositorConfig().blur, letter / 2, h, w) <= 0.01


@pytest.mark.parametrize("blur", [1.0])
def test_the_tutorial_look_does_not_and_stays_available(blur):
    """--blur 1 (the tutorial's look) leaves such text at more than half its contrast."""
    assert contrast_left(blur, H / 8) > 0.5
    assert CompositorConfig(blur=blur).blur == 1.0


def test_a_stronger_blur_never_keeps_more_detail():
    """Downscaling before blurring must not fold fine detail into coarser patterns (aliasing):
    a reduced-resolution blur once kept more of a letter-scale grating at --blur 4 than at 3."""
    for period in (H / 8, H / 6):
        kept = [contrast_left(b, period) for b in (1.0, 2.0, 3.0, 4.0, 5.0)]
        assert all(a >= b for a, b in zip(kept, kept[1:], strict=False)), (period, kept)

"""compositor/motion.py on generated pictures: the carried mask follows a moving person, the room
uncovered by a change the motion cannot explain is hidden, a still picture is left alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from compositor.motion import MotionCompensator, MotionSettings

H, W = 180, 320  # frames; the alpha is given at the same size (compose's working size for 320)
SHARED = Path(__file__).resolve().parents[2] / "shared"


def texture(h: int, w: int, mean: float, seed: int, sigma: float = 1.2) -> np.ndarray:
    """Fine random texture (BGR uint8) around ``mean``: something optical flow can lock on to."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.normal(0, 40, (h, w)).astype(np.float32), (0, 0), sigma)
    return cv2.cvtColor(np.clip(mean + t, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def person_mask(cx: int, cy: int) -> np.ndarray:
    """A head-and-shoulders blob (float32 0/1, H x W) centred at (cx, cy)."""
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, (cx, cy - 35), (18, 22), 0, 0, 360, 1, -1)  # head
    cv2.ellipse(m, (cx, cy + 40), (45, 55), 0, 0, 360, 1, -1)  # torso
    return m.astype(np.float32)


BACKGROUND = texture(H, W, 80, seed=1)
PERSON_TEXTURE = texture(H + 200, W + 400, 175, seed=2)


def frame_with_person(cx: int | None, cy: int = 100) -> np.ndarray:
    """Background with the textured person pasted at (cx, cy); the texture moves with the person."""
    out = BACKGROUND.copy()
    if cx is None:
        return out
    m = person_mask(cx, cy).astype(bool)
    dx, dy = 200 - cx, 100 - cy  # person texture is fixed to the person, not to the frame
    out[m] = PERSON_TEXTURE[dy + 100 : dy + 100 + H, dx + 200 : dx + 200 + W][m]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 0.5, b >= 0.5
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


def test_tracked_alpha_follows_translated_person():
    comp = MotionCompensator()
    xs = [100 + 4 * i for i in range(25)]  # 96 px to the right over 25 frames
    frames = [frame_with_person(x) for x in xs]
    for i, f in enumerate(frames):
        comp.observe(i, f)
        if i == 0:
            assert comp.track(i, f) is None  # no mask yet
    # the mask of frame 0 arrives now, 24 frames late
    comp.new_mask(person_mask(xs[0], 100), 0, frames[0])
    tr = comp.track(24, frames[24])
    truth = person_mask(xs[24], 100)
    assert tr.alpha.shape == (H, W) and tr.alpha.dtype == np.float32
    assert iou(person_mask(xs[0], 100), truth) < 0.3  # the stale mask as is: far off
    assert iou(tr.alpha, truth) > 0.85
    # and it keeps following, frame by frame, until the next mask
    for j, x in enumerate(range(xs[-1] + 4, xs[-1] + 40, 4), start=25):
        f = frame_with_person(x)
        comp.observe(j, f)
        tr = comp.track(j, f)
    assert iou(tr.alpha, person_mask(x, 100)) > 0.85
    # the room behind the person is not shown where the person used to be
    assert float(tr.alpha[person_mask(xs[0], 100) > 0].max()) < 0.5


@pytest.mark.parametrize("where", ["gone", "jumped"])
def test_room_uncovered_by_unexplained_change_is_hidden(where):
    comp = MotionCompensator()
    frames = [frame_with_person(120) for _ in range(4)]
    frames += [frame_with_person(None if where == "gone" else 250) for _ in range(4)]
    for i, f in enumerate(frames):
        comp.observe(i, f)
    comp.new_mask(person_mask(120, 100), 0, frames[0])
    tr = comp.track(7, frames[7])
    old = person_mask(120, 100) > 0
    room = old & (person_mask(250, 100) == 0) if where == "jumped" else old
    assert float(tr.alpha[room].max()) < 0.5  # the room where the person was is hidden
    assert tr.hidden_share > 0.5 * np.count_nonzero(room) / room.size


def test_background_change_behind_still_person_is_hidden():
    """The person sits still, but the mask frame's person region now shows something else."""
    comp = MotionCompensator()
    still = frame_with_person(160)
    changed = still.copy()
    region = person_mask(160, 100) > 0
    changed[region] = BACKGROUND[region]  # person left, nothing moved: flow cannot explain it
    for i, f in enumerate([still, still, changed, changed]):
        comp.observe(i, f)
    comp.new_mask(person_mask(160, 100), 0, still)
    tr = comp.track(3, changed)
    assert float(tr.alpha[region].mean()) < 0.1


@pytest.mark.parametrize("noise", [0.0, 3.0])
def test_still_picture_with_noise_is_left_alone(noise):
    rng = np.random.default_rng(5)
    base = frame_with_person(160).astype(np.float32)
    alpha = cv2.GaussianBlur(person_mask(160, 100), (0, 0), 1.0)
    comp = MotionCompensator()
    for i in range(40):
        f = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
        comp.observe(i, f)
        if i == 5:
            comp.new_mask(alpha, 0, np.clip(base, 0, 255).astype(np.uint8))
        if i >= 5:
            tr = comp.track(i, f)
            assert tr.hidden_share == 0.0
            assert iou(tr.alpha, alpha) > 0.99
            assert float(np.abs(tr.alpha - alpha).mean()) < 0.005


def _exposed(frame: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """``frame`` as a camera that changed its exposure and white balance: B, G, R scaled."""
    return np.clip(frame.astype(np.float32) * np.float32(gains), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("match", [True, False])
def test_exposure_drift_of_a_still_picture_hides_nothing(match):
    """Auto exposure and white balance drift by up to 25 % while nothing moves: with the match
    nothing is hidden and the mask stays; without it the rule hides the person's edge (what the
    match is for: the same test fails without it)."""
    base = frame_with_person(160)
    alpha = cv2.GaussianBlur(person_mask(160, 100), (0, 0), 1.0)
    comp = MotionCompensator(MotionSettings(match_exposure=match))
    hidden = []
    for i in range(30):
        t = i / 29
        f = _exposed(base, (1 + 0.25 * t, 1 + 0.2 * t, 1 + 0.1 * t))
        comp.observe(i, f)
        if i == 0:
            comp.new_mask(alpha, 0, base)
        tr = comp.track(i, f)
        hidden.append(tr.hidden_share)
        if match:
            assert iou(tr.alpha, alpha) > 0.99
    if match:
        assert max(hidden) == 0.0
    else:
        assert hidden[-1] > 0.005


def test_exposure_change_does_not_keep_the_room_of_a_person_who_left():
    """The match explains a change of exposure, not a change of content: the person leaves
    while the camera's gain rises by 20 %, and their old place is still hidden."""
    comp = MotionCompensator()
    still = frame_with_person(160)
    changed = still.copy()
    region = person_mask(160, 100) > 0
    changed[region] = BACKGROUND[region]
    changed = _exposed(changed, (1.2, 1.2, 1.2))
    for i, f in enumerate([still, still, changed, changed]):
        comp.observe(i, f)
    comp.new_mask(person_mask(160, 100), 0, still)
    tr = comp.track(3, changed)
    assert float(tr.alpha[region].mean()) < 0.1


def test_exposure_gains_are_the_rooms_median_ratio():
    """Per channel, the gain of the room is found to 1 % even where 30 % of it changed
    arbitrarily (something moved); the person's pixels (carried alpha 1) do not count."""
    from compositor import kernels

    rng = np.random.default_rng(3)
    mask_frame = rng.uniform(30, 180, (90, 160, 3)).astype(np.float32)
    cur = mask_frame * np.float32([1.3, 0.9, 1.05])
    moved = rng.random((90, 160)) < 0.3
    cur[moved] = rng.uniform(16, 240, (int(moved.sum()), 3))
    alpha = np.zeros((90, 160), np.float32)
    alpha[:, 100:] = 1.0
    cur[:, 100:] = 200.0  # the person: would pull every gain towards 200 / mask frame
    sampled = np.dstack([alpha, mask_frame]).astype(np.float32)
    hist, gains = np.empty((3, 300), np.int64), np.empty(3)
    n = kernels.exposure_gains(sampled, np.ascontiguousarray(cur), 0.05, 16.0, 240.0, hist, gains)
    assert n > 0.5 * 45 * 50
    assert np.allclose(gains, [1.3, 0.9, 1.05], rtol=0.01)


def test_mask_every_frame_is_identity():
    comp = MotionCompensator()
    for i, x in enumerate(range(100, 160, 3)):
        f = frame_with_person(x)
        comp.observe(i, f)
        comp.new_mask(person_mask(x, 100), i, f)
        tr = comp.track(i, f)
        assert iou(tr.alpha, person_mask(x, 100)) > 0.99
        assert tr.hidden_share == 0.0


def test_mask_for_frame_no_longer_in_history_uses_mask_frame():
    comp = MotionCompensator(MotionSettings(history_frames=5))
    xs = [100 + 3 * i for i in range(20)]
    for i, x in enumerate(xs):
        comp.observe(i, frame_with_person(x))
    assert comp.history_len == 5
    comp.new_mask(person_mask(xs[12], 100), 12, frame_with_person(xs[12]))
    tr = comp.track(19, frame_with_person(xs[19]))
    assert iou(tr.alpha, person_mask(xs[19], 100)) > 0.85


def test_tracked_picture_is_this_frame_at_flow_resolution():
    """``Tracked.picture`` (the compositor's guide, ``compose.render(guide=...)``) is the frame
    being tracked, box-averaged to flow resolution by exact halvings; when the newest frame
    observed is another one (a caller that skipped ``observe``) there is none, never another
    frame's picture."""
    from compositor.compose import downscale_by

    comp = MotionCompensator()
    frames = [frame_with_person(100 + 4 * i) for i in range(4)]
    for i, f in enumerate(frames[:3]):
        comp.observe(i, f)
    comp.new_mask(person_mask(100, 100), 0, frames[0])
    tr = comp.track(2, frames[2])
    assert np.array_equal(tr.picture, downscale_by(frames[2], W // tr.picture.shape[1]))
    assert comp.track(3, frames[3]).picture is None


def test_alpha_of_another_size_keeps_its_size():
    comp = MotionCompensator()
    frames = [frame_with_person(100 + 4 * i) for i in range(6)]
    for i, f in enumerate(frames):
        comp.observe(i, f)
    small = cv2.resize(person_mask(100, 100), (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    comp.new_mask(small, 0, frames[0])
    tr = comp.track(5, frames[5])
    assert tr.alpha.shape == small.shape
    truth = cv2.resize(person_mask(120, 100), (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    assert iou(tr.alpha, truth) > 0.8


def test_frame_size_change_resets():
    comp = MotionCompensator()
    f = frame_with_person(150)
    for i in range(3):
        comp.observe(i, f)
    comp.new_mask(person_mask(150, 100), 0, f)
    assert comp.track(2, f) is not None
    big = cv2.resize(f, (2 * W, 2 * H))
    comp.observe(3, big)
    assert comp.history_len == 1
    assert comp.track(3, big) is None  # the old stream's mask is gone
    comp.new_mask(person_mask(150, 100), 0, f)  # a late mask of the old size: not carried
    assert comp.track(3, big) is None
    comp.reset()
    assert comp.history_len == 0 and comp.track(3, big) is None


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (11, 11), (13, 500), (5, 1000)])
def test_frames_too_small_for_the_flow_are_not_compensated(shape):
    """DIS refuses such pictures (it raised, and the compositor died on a peer's 1x1 frames):
    they are observed without a flow, a mask is not carried, track() says None (the mask is
    then applied as with --no-motion); the next stream of a usable size is compensated again."""
    rng = np.random.default_rng(0)
    comp = MotionCompensator()
    for i in range(4):
        f = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        comp.observe(i, f)
        if i == 1:
            comp.new_mask(np.ones(shape, np.float32), 1, f)
        assert comp.track(i, f) is None
    assert comp.history_len == 0
    f = frame_with_person(150)
    comp.observe(10, f)
    comp.observe(11, f)
    comp.new_mask(person_mask(150, 100), 10, f)
    assert comp.track(11, f) is not None


def test_history_memory_is_bounded():
    comp = MotionCompensator(MotionSettings(history_frames=30))
    rng = np.random.default_rng(0)
    for i in range(60):
        comp.observe(i, rng.integers(0, 255, (H // 2, W // 2, 3), np.uint8))
    assert comp.history_len == 30
    per_frame = (
        (H // 2) * (W // 2) * (1 + 2 * 2)
    )  # no halving at 160 px wide  # grey uint8 + float16 flow at flow res
    assert comp.memory_bytes <= 30 * per_frame


@pytest.mark.skipif(not SHARED.exists(), reason="../shared (shared media) is not checked out")
def test_real_clip_still_frame_hides_nothing():
    cap = cv2.VideoCapture(str(SHARED / "media" / "videos" / "news_anchor_akiyo_cif.mp4"))
    ok, f = cap.read()
    cap.release()
    assert ok
    rng = np.random.default_rng(1)
    alpha = np.zeros(f.shape[:2], np.float32)
    alpha[f.shape[0] // 4 :, f.shape[1] // 3 : 2 * f.shape[1] // 3] = 1.0
    comp = MotionCompensator()
    for i in range(10):
        g = np.clip(f + rng.normal(0, 2.0, f.shape), 0, 255).astype(np.uint8)
        comp.observe(i, g)
        if i == 0:
            comp.new_mask(alpha, 0, f)
        tr = comp.track(i, g)
        assert tr.hidden_share == 0.0 and iou(tr.alpha, alpha) > 0.99


def test_band_interior_change_kept_disocclusion_at_edge_hidden():
    """Idea 1: the room can only appear where the silhouette moved away. A still person whose
    chest changes appearance gradually (a turning head, a hand in front of the body: far from the
    edge, no motion) keeps the chest; an arm pulled back next to the edge uncovers the room there,
    and that room is hidden, although the arm's texture does not move (the flow cannot explain
    the uncovered room, the frame-to-frame check catches it)."""
    cx, cy = 160, 100
    body = person_mask(cx, cy) > 0
    patch = np.zeros((H, W), bool)
    patch[cy + 25 : cy + 55, cx - 15 : cx + 15] = True  # chest, >= 25 px from the edge
    assert not (patch & ~body).any()

    def frame(k: int) -> tuple[np.ndarray, np.ndarray]:
        """k = 0..12: the chest brightens by 7 levels a frame, the arm is 3 px shorter."""
        f = frame_with_person(cx, cy)
        arm = np.zeros((H, W), bool)
        arm[cy + 10 : cy + 24, cx + 40 : cx + 110 - 3 * k] = True  # sticks out to the right
        f[arm] = PERSON_TEXTURE[200 - cy : 200 - cy + H, 400 - cx : 400 - cx + W][arm]
        f[patch] = np.clip(f[patch].astype(np.int16) + 7 * k, 0, 255).astype(np.uint8)
        return f, body | arm

    frames = [frame(min(k, 12)) for k in range(16)]
    for settings, chest_kept in (
        (MotionSettings(), True),
        (MotionSettings(hide_band=False), False),
    ):
        comp = MotionCompensator(settings)
        for i, (f, _) in enumerate(frames):
            comp.observe(i, f)
        comp.new_mask(frames[0][1].astype(np.float32), 0, frames[0][0])
        tr = comp.track(15, frames[15][0])
        # where the arm was: the room now (but for the 1 px next to the new tip, which the
        # bilinear resampling of a hard mask makes half person)
        arm_now = cv2.dilate(frames[15][1].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        uncovered = frames[0][1] & ~arm_now
        assert float(tr.alpha[uncovered].max()) < 0.5  # never shown, with or without the band
        if chest_kept:
            assert float(tr.alpha[patch].min()) > 0.9  # the band keeps the chest
            assert float(tr.alpha[body].mean()) > 0.95
        else:
            assert float(tr.alpha[patch].mean()) < 0.5  # the rule everywhere hid the chest


def test_change_rule_function_band_and_threshold():
    """The change rule as a pure function (compositor.motion._hidden) on a still mask: nothing
    below the threshold; with no motion since the mask frame, a change at the edge is hidden
    (within the 4 px margin) and one deep inside the person is not; unbounded motion (the
    occlusion check failed there) makes the band the whole person."""
    from compositor.motion import _hidden

    s = MotionSettings()
    alpha = np.zeros((90, 160), np.float32)
    alpha[20:80, 50:110] = 1.0  # a 60 px square person, 30 px from edge to centre
    motion = np.zeros((90, 160), np.float32)  # no motion since the mask frame
    res = np.zeros((90, 160), np.float32)
    assert _hidden(s, res + 10.0, 24.0, alpha, motion) is None
    res[20:26, 60:70] = 100.0  # at the edge
    res[45:55, 75:85] = 100.0  # deep inside
    out = _hidden(s, res, 24.0, alpha, motion)
    assert out.dtype == np.uint8 and out[22, 65] == 1 and out[50, 80] == 0
    out = _hidden(s, res, 24.0, alpha, motion + s.unexplained_px)
    assert out[50, 80] == 1
    assert not out[:, :45].any()  # never outside the person (plus the grown ring)


@pytest.mark.parametrize("alpha_shape", [(180, 320), (90, 160)], ids=["compiled", "remap"])
def test_warp_with_broken_map_reads_only_edge_pixels(alpha_shape):
    """Every coordinate is clamped before it becomes an index: a map with NaN, infinite or huge
    coordinates (never produced by the flow, but nothing may read outside the mask) gives the
    mask's edge pixels, as cv2.remap's BORDER_REPLICATE would. Both paths: the compiled gather
    (an alpha of another size than the flow) and cv2.remap through ``_safe_map`` (the alpha at
    the flow's size; a float map with a NaN makes cv2.remap itself return NaN)."""
    from compositor.motion import _warp_alpha

    state = np.zeros((90, 160, 4), np.float32)
    state[..., 0] = np.nan
    state[5, 5, 1] = np.inf
    state[6, 6, :2] = (-1e30, 1e30)
    alpha = np.zeros(alpha_shape, np.float32)
    alpha[:, 0] = 1.0  # the left edge column is person, everything else room
    out, hidden = _warp_alpha(alpha, state, None, {})
    assert hidden == 0 and np.isfinite(out).all()
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_remap_warp_matches_the_exact_bilinear_gather():
    """The alpha at the flow's size goes through cv2.remap with a float map (OpenCV 5's
    vectorised path: exact bilinear weights, where the fixed-point map had 1/32 px); the
    compiled gather, exact bilinear, is the reference: the same alpha to float precision, and
    the change rule's hiding zeroes the same pixels."""
    from compositor import kernels
    from compositor.motion import _axis_table, _identity, _new_state, _warp_alpha

    rng = np.random.default_rng(3)
    state = _new_state(_identity(90, 160))
    flow = cv2.GaussianBlur(rng.normal(0, 6, (90, 160, 2)).astype(np.float32), (0, 0), 4)
    state[..., :2] += flow * 8  # smooth, several px, partly beyond the edges
    alpha = cv2.GaussianBlur(person_mask(160, 100)[::2, ::2].copy(), (0, 0), 2)
    hidden = np.zeros((90, 160), np.uint8)
    hidden[40:60, 60:100] = 1
    out, n = _warp_alpha(alpha, state, hidden, {})
    ref = np.empty_like(out)
    t_col, t_row = _axis_table(160, 160), _axis_table(90, 90)
    n_ref = kernels.warp_alpha(alpha, state, t_col, t_row, hidden, ref)
    assert np.abs(out - ref).max() <= 1e-5
    # n: pixels above 0 that the hiding zeroed
    assert not out[hidden == 1].any() and n_ref > 0 and abs(n - n_ref) <= n_ref // 100


def test_map_copy_and_set_are_the_slice():
    """``_map_of`` / ``_set_map`` (the complex64 view) are exactly ``state[..., :2]`` read and
    written, and leave the other two channels alone."""
    from compositor.motion import _map_of, _set_map

    rng = np.random.default_rng(5)
    state = rng.normal(0, 50, (90, 160, 4)).astype(np.float32)
    xy = _map_of(state)
    assert xy.shape == (90, 160, 2) and xy.flags["C_CONTIGUOUS"]
    assert np.array_equal(xy, state[..., :2])
    before = state.copy()
    new = rng.normal(0, 50, (90, 160, 2)).astype(np.float32)
    _set_map(state, new)
    assert np.array_equal(state[..., :2], new) and np.array_equal(state[..., 2:], before[..., 2:])


def test_change_residual_through_the_map():
    """The mask frame seen through a map of a whole-pixel shift (remap exact there): the
    residual is |this frame - the shifted mask frame| (``hold_residuals``), the warped alpha the
    shifted alpha, the motion the shift's length, and unbounded where the occlusion check failed
    (``rule_inputs``)."""
    from compositor import kernels
    from compositor.motion import _identity, _new_state, _safe_map, _through

    rng = np.random.default_rng(4)
    grey = rng.uniform(0, 255, (90, 160)).astype(np.float32)
    alpha = (rng.uniform(0, 1, (90, 160)) > 0.5).astype(np.float32)
    state = _new_state(_identity(90, 160))
    state[..., 0] += 3.0
    state[..., 1] -= 4.0  # this frame's pixel (x, y) was at (x + 3, y - 4) in the mask frame
    state[10, 20, 2] = 1000.0
    cur = np.roll(grey, (4, -3), axis=(0, 1)) + 5.0  # the same picture moved, 5 levels brighter
    cur[50:60, 50:60] = 0.0  # and a change the motion does not explain
    out = [np.empty((90, 160), np.float32) for _ in range(3)]
    sampled = _through(np.dstack([alpha, grey]), _safe_map(state))
    one = np.ones(1, np.float32)
    small_alpha, res, motion = out
    in_place = np.dstack([alpha, grey])
    kernels.hold_residuals(sampled, in_place, cur[..., None], one, res, np.empty_like(res))
    bad = kernels.rule_inputs(sampled, state, res, 20.0, False, 1000.0, small_alpha, motion)
    inner = (slice(4, -1), slice(1, -3))  # away from the repeated edges
    expect = np.abs(cur - np.roll(grey, (4, -3), axis=(0, 1)))
    assert np.allclose(res[inner], expect[inner], atol=1e-3)
    assert np.array_equal(small_alpha[inner], np.roll(alpha, (4, -3), axis=(0, 1))[inner])
    assert bad == np.count_nonzero(res > 20.0) and bad >= 90
    assert np.allclose(np.delete(motion.ravel(), 10 * 160 + 20), 5.0) and motion[10, 20] == 1000


def _carried_at_flow_res(frame_f, frame_c, alpha_f, shift_x, hold):
    """``compositor.motion._carried`` at flow resolution (160x90): the mask frame ``frame_f``
    with its ``alpha_f``, this frame ``frame_c``, a map that says everything moved ``shift_x``
    px to the left since F (this frame's x was at x + shift_x in F)."""
    from compositor.motion import _blurred, _carried, _identity, _mask_ref, _new_state

    s = MotionSettings(hold_still=hold)
    grey = cv2.cvtColor(frame_f, cv2.COLOR_BGR2GRAY).astype(np.float32)
    ref = _mask_ref(s, grey, alpha_f, frame_f)
    ident = _identity(90, 160)
    state = _new_state(ident)
    state[..., 0] += shift_x
    kept = state.copy()
    got = _carried(s, ref, _blurred(frame_c, s.residual_blur), state, ident)
    assert np.array_equal(state, kept)  # the carried state is never changed
    return got


@pytest.mark.parametrize("hold", [True, False])
def test_subject_the_camera_follows_keeps_its_mask(hold):
    """A camera panning with its subject: the room streams 8 px to the left, the subject (a
    plain shirt, which gives the flow nothing to lock on to) stays where it was, and the map
    says everything moved with the room. Held in place where that explains the picture better,
    the mask stays on the subject and the residual there is low; through the map alone (hold
    off) it slides off the subject onto the room."""
    room = texture(90, 200, 80, seed=6)
    subject = np.zeros((90, 160), np.float32)
    subject[20:80, 60:90] = 1.0
    shirt = np.zeros((90, 160, 3), np.uint8) + np.uint8([60, 90, 200])

    def shot(x0):
        out = room[:, x0 : x0 + 160].copy()
        out[subject > 0] = shirt[subject > 0]
        return out

    got = _carried_at_flow_res(shot(0), shot(8), subject, 8.0, hold)
    alpha = got.sampled[..., 0]
    if hold:
        assert iou(alpha, subject) > 0.9
        assert float(np.median(got.res[subject > 0])) < 5.0
        # the map is the identity at the subject's edge (inside the plain shirt both agree)
        assert np.allclose(got.xy[50, 85], (85, 50))
        assert np.allclose(got.xy[50, 20], (28, 50))  # the room kept the map
    else:
        assert iou(alpha, subject) < 0.8


def test_person_who_moved_on_a_still_camera_follows_the_map():
    """The other way round: a still room, the person moved 8 px to the left and the map knows
    it. The mask frame in place would put the person where the room now shows (a high
    residual there): the map wins, the room they left is not carried as person."""
    room = texture(90, 160, 80, seed=7)
    person = texture(90, 180, 175, seed=8)
    alpha_f = np.zeros((90, 160), np.float32)
    alpha_f[20:80, 68:98] = 1.0
    frame_f = room.copy()
    frame_f[20:80, 68:98] = person[20:80, 68:98]
    frame_c = room.copy()
    frame_c[20:80, 60:90] = person[20:80, 68:98]  # the same person, 8 px to the left
    got = _carried_at_flow_res(frame_f, frame_c, alpha_f, 8.0, True)
    moved = np.zeros_like(alpha_f)
    moved[20:80, 60:90] = 1.0
    alpha = got.sampled[..., 0]
    assert iou(alpha, moved) > 0.9
    assert float(alpha[20:80, 92:98].max()) < 0.5  # the room they left


def _coloured_scene() -> tuple[np.ndarray, np.ndarray]:
    """A still person in two reds (horizontal stripes 12 px thick) over a bluish room, both
    finely textured; and the person's mask."""
    grain = texture(H, W, 0, seed=7).astype(np.float32) * 0.3
    room = np.array([170, 120, 60], np.float32) + grain
    rows = (np.arange(H) // 12) % 2
    reds = np.array([[40, 60, 200], [90, 120, 250]], np.float32)[rows][:, None, :]
    mask = person_mask(160, 100)
    frame = np.where(mask[..., None] > 0, reds + grain, room)
    return np.clip(frame, 0, 255).astype(np.uint8), mask


@pytest.mark.parametrize("gate", [True, False])
def test_colour_gate_keeps_a_change_in_the_persons_colours(gate):
    """The left half of the person turns the lighter of its two reds (a residual of ~55 grey
    levels on the darker stripes, no motion that explains it): with the colour gate it stays
    person, without it the residual rule hides it. Where the room's colour appears instead, it
    is hidden either way."""
    still, mask = _coloured_scene()
    grain = texture(H, W, 0, seed=7).astype(np.float32) * 0.3
    region = mask > 0
    region[:, W // 2 :] = False
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    dark_rows = ((np.arange(H) // 12) % 2 == 0)[:, None]
    probe = region & dark_rows & (dist > 4) & (dist <= 20)  # away from mixed edge pixels
    for colour, keep in (((90, 120, 250), gate), ((170, 120, 60), False)):
        changed = still.copy()
        changed[region] = np.clip(np.float32(colour) + grain, 0, 255).astype(np.uint8)[region]
        comp = MotionCompensator(MotionSettings(colour_llr=-0.5 if gate else None))
        for i, f in enumerate([still, still, changed, changed]):
            comp.observe(i, f)
        comp.new_mask(mask, 0, still)
        alpha = comp.track(3, changed).alpha
        if keep:
            assert float(alpha[probe].mean()) > 0.9
        else:
            assert float(alpha[probe].mean()) < 0.3


@pytest.mark.parametrize("colour", [True, False])
def test_colour_residual_sees_the_room_at_the_persons_brightness(colour):
    """The person (a red, grey level ~100) leans back: a 6 px ring at their edge now shows the
    room, a green of the same grey level, with no motion that explains it. Grey alone sees no
    change there (the residual is ~2 levels), so without the colour residual the room shows
    sharp through the old silhouette; with it, the ring is hidden."""
    grain = texture(H, W, 0, seed=7).astype(np.float32) * 0.3
    room = np.clip(np.float32((40, 150, 30)) + grain, 0, 255).astype(np.uint8)  # grey ~101
    red = np.clip(np.float32((40, 60, 200)) + grain[::-1], 0, 255).astype(np.uint8)  # grey ~100
    mask = person_mask(160, 100)
    still = np.where(mask[..., None] > 0, red, room)
    inner = cv2.erode(mask, np.ones((13, 13), np.uint8))  # the person 6 px thinner
    leaned = np.where(inner[..., None] > 0, red, room)
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in (still, leaned)]
    ring = (mask > 0) & (inner == 0)
    assert np.abs(grey[0] - grey[1])[ring].mean() < 6  # the change is in hue, not brightness
    dist = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 3)
    probe = ring & (dist > 1.5) & (dist < 4.5)  # away from the mixed pixels at either side
    comp = MotionCompensator(MotionSettings(residual_colour=colour))
    for i, f in enumerate([still, still, leaned, leaned]):
        comp.observe(i, f)
    comp.new_mask(mask, 0, still)
    alpha = comp.track(3, leaned).alpha
    if colour:
        assert float(alpha[probe].max()) < 0.5
        assert float(alpha[cv2.erode(inner, np.ones((9, 9), np.uint8)) > 0].min()) > 0.9
    else:
        assert float(alpha[probe].mean()) > 0.9  # what the grey rule alone lets through

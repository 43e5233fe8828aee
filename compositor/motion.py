"""Motion compensation of a stale person mask: carry the newest mask from the frame it was computed
on (F) to the frame being shown (C), and keep following the person until the next mask.

Why: a slow model delivers a mask every 2-5 s for a frame that is already 2-5 s old; pasted as is,
the room shows sharp where the person used to be and a moving arm is blurred away.

Method (chosen by measurement, see docs/motion.md and bench/motion_lab.py):

* every frame (``observe``): a small grey copy (power-of-two downscale to ~160 px wide) and the
  DIS optical flow (preset ULTRAFAST) from it back to the previous frame. Both go into a bounded
  history, so a mask that arrives for an old frame F can be carried over every frame since F.
* per mask (``new_mask``): compose the per-frame backward flows F -> C into one map "pixel of C ->
  where it was in F" (chaining, rather than one direct F -> C flow: frame-to-frame motion is
  small, which is what DIS at low resolution handles well; a direct flow over seconds fails on
  large motion). If F is no longer in the history, a direct flow from ``mask_frame`` is the
  fallback.
* per frame (``track``): extend the map by this frame's flow (and every second frame refine it
  by a direct flow against F), warp the mask's alpha through it once (the alpha is resampled
  once, not once per frame, so it does not blur over time), then the privacy rule: where the
  warped alpha calls a pixel person but the picture there does not match the mask frame seen
  through the same map (photometric residual above what camera noise makes), the motion does not
  explain the change: those pixels are hidden (alpha 0) until a fresh mask says otherwise.
* the rule applies only in the band the silhouette can have swept since F: within D (+ a margin)
  of the warped mask's edge, D the net motion since F near the pixel. The room can only appear
  where the person moved away; the interior of a person further than that from the edge cannot
  reveal it, even when its appearance changes (a turning head, an arm in front of the body).
* where the frame-to-frame flow does not explain the change from the previous frame (the
  disocclusion behind a moving person, a cut, someone jumping out: what an occlusion check
  detects), the motion at that pixel is unbounded from then on and the band covers it.
* hold where still: per region, the mask frame in place competes with the map, and whichever
  explains this frame better carries the mask there. A camera that follows its subject keeps
  the person still in the picture while the room streams past, and the dense flow, dominated by
  the room, would carry the mask off the person.
* colour gate: the room can only appear in the room's colours. A changed pixel whose colour is
  much likelier the person's than the room's (histograms of the mask frame's person and of the
  room near them) is a changed pose, not the room, and stays: the residual against a seconds-old
  picture alone cannot tell the two apart.

numpy/OpenCV and the compiled per-pixel steps of ``compositor.kernels``; no threads, no I/O.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from compositor import kernels


@dataclass(frozen=True)
class MotionSettings:
    """Every constant of the method, with why. Defaults are the lab's choice (docs/motion.md)."""

    # Flow resolution: the frame is halved until it is at most ~this wide (640 -> 160, 1280 ->
    # 160). Person motion at a desk is large and smooth; 160 px keeps DIS at ~0.2 ms per frame
    # and exact halvings (2x2 box averages) are the cheapest downscale there is.
    flow_width: int = 160
    # DIS finest pyramid level (0 = flow computed at full flow resolution). ULTRAFAST's default
    # (2) would compute the flow at 40 px wide, too coarse for an arm.
    dis_finest_scale: int = 1
    # DIS patch stride (flow px at the finest level; patches are 8 px) of the frame-to-frame
    # flow, and of the refinement against the mask frame. ULTRAFAST's 4 overlaps the patches by
    # half. Frame to frame the motion is small and the refinement removes the chain's drift
    # every ``refine_every`` frames, so 6 does about as well for ~35 % less DIS (-0.2-0.5 ms a
    # frame): bench_motion's checks in the lab at S = 0.5 / 1 / 2 pass or miss as before on
    # every clip, the room shown within 0.04 pp; IoU -0.014 on juggling at 2 s and -0.039 on
    # tennis at 1 s (two masks scored), the same or better elsewhere (docs/motion.md, Cost). 5
    # scored about the same but let one pixel of room show beyond a retracting arm's tip in
    # tests/test_motion.py. The refinement is what places the edge on the person: at stride 6
    # there juggling lost 0.034 IoU at S = 2 s, so it keeps 4.
    dis_patch_stride: int = 6
    refine_patch_stride: int = 4
    # Frames kept for carrying a late mask over every frame since it was computed. 8 s at 30 fps:
    # masks older than the compositor's --max-mask-age (6 s for Mask R-CNN) are refused anyway.
    history_frames: int = 240
    # Use the frame-to-frame chain (True) or one direct flow mask frame -> current (False).
    chain: bool = True
    # Every frame, refine the chained map by a DIS flow current -> mask frame that starts from it
    # (keyframe tracking): the chain predicts large motion, the direct match removes its drift.
    refine_direct: bool = True
    # Change rule on or off (off only for the lab's comparison).
    hide_unexplained: bool = True
    # Photometric residual threshold in grey levels (0..255) between the current frame and the
    # mask frame seen through the motion, both at flow resolution after a small blur. At 160 px
    # one pixel averages 16 camera pixels, so camera noise (sigma ~2-5 levels) is down to ~1-2;
    # the threshold sits well above that and above slow lighting drift, and well below the
    # contrast between a person and the room behind them.
    residual_threshold: float = 24.0
    # The residual in colour: the largest change of any of B, G, R (True), or of grey only
    # (False). Grey is the channels' weighted mean, so it misses a change of hue at equal
    # brightness: dark skin uncovering a shaded tree trunk, a blue shirt leaving a green hedge.
    # That was most of the room shown on juggling at S = 2 s (0.49 -> 0.18 % of the frame; on
    # carphone 0.90 -> 0.39 %) for +0.1-0.7 pp person blurred (docs/motion.md). The threshold
    # and the noise floor apply to it as they do to grey (its noise is measured on itself).
    residual_colour: bool = True
    # The threshold also scales with the noise measured on this stream (robust sigma of the
    # frame-to-frame residual): never below ``noise_factor`` x that sigma, so a noisy camera
    # cannot trigger the rule.
    noise_factor: float = 6.0
    # Blur (sigma, flow px) of both pictures before the residual: single-pixel flow errors on
    # texture edges are not changes the motion fails to explain.
    residual_blur: float = 1.0
    # Only pixels the warped alpha calls (partly) person can reveal the room; the rule hides
    # nothing else (it never needs to: background stays background).
    hide_min_alpha: float = 0.05
    # Every this many frames the stream's noise is re-measured (frame-to-frame residual after
    # motion, robust sigma); it changes with light and gain, slowly.
    noise_every: int = 8
    # Ignore changes thinner than 2 x this + 1 flow px (morphological opening). Off: it lowered
    # person blurred on akiyo (0.74% -> 0.34% at S = 2 s) but lets the room show in thin strips
    # where the map is discontinuous (a person who left: tests/test_motion.py catches it).
    hide_open_px: int = 0
    # Grow the hidden region by this many flow px: the residual is computed on a blurred picture
    # and misses the thin border of a change; the room must not show around a hidden patch.
    hide_grow_px: int = 1
    # Hysteresis (as in edge detection) for that ring: a ring pixel stays visible only where the
    # flow-res analysis vouches for it (warped alpha >= 0.5 and residual <= this share of the
    # threshold, or outside the band); holes inside a change are closed. Lowered person blurred
    # on every clip (sitting 0.79 -> 0.68 %, carphone 7.9 -> 7.2 %) for +0.02-0.07 pp room shown
    # (docs/motion.md). 0 = plain dilation (the privacy-strictest choice).
    hide_grow_low: float = 0.5
    # Band rule (the room can only appear where the silhouette moved away): a changed pixel is
    # hidden only if it lies within D + ``band_margin_px`` (flow px) of the warped mask's edge,
    # D = the largest net displacement since the mask frame (|map(x) - x|) within ``band_max_px``
    # around it (the uncovered room next to a moving edge may itself be still). The interior of a
    # person further than the motion from the edge cannot uncover the room, even when its
    # appearance changes (a turning head, an arm in front of the body). Margin 4: chosen
    # leave-one-clip-out among 1/2/4 (equal on the acceptance checks, least room shown).
    hide_band: bool = True
    band_margin_px: float = 4.0
    band_max_px: int = 24
    # D from the path length along the chain (True) rather than the net displacement: the path
    # also counts flow jitter and oscillation (akiyo: IoU 0.976 vs 0.987), and only where the
    # person is now vs in F decides what room can show. Off.
    band_path: bool = False
    # Where the frame-to-frame flow does not explain the change from the previous frame (the
    # same residual test against the previous frame: a disocclusion, a cut, someone jumping out),
    # the motion there is unbounded: the motion at that pixel becomes this many flow px (large =
    # the whole person, privacy first), and it follows the pixel from then on. Without it (0)
    # carphone showed 3.0 % room instead of 0.8 %.
    unexplained_px: float = 1000.0
    # Refine the map against the mask frame every this many frames (1 = every frame); between
    # refinements the map is only chained. 3: the refinement costs ~1 ms (DIS at 160 px), and at
    # 2 the median frame at 640x360 is a refining one (3.7 ms, over the 3 ms budget); at 3 it is
    # not. Quality moved by at most 0.01 IoU on any clip vs every frame (docs/motion.md).
    refine_every: int = 3
    # DIS finest scale of the refinement flow (-1: the same as ``dis_finest_scale``). Scale 2 is
    # 4x cheaper but lost 0.1 IoU on carphone and juggling (docs/motion.md): not used.
    refine_finest_scale: int = -1
    # Hold where still: per region, the mask frame in place (no motion) competes with the map,
    # and whichever explains this frame better (the smaller residual, averaged over a box of
    # ``hold_box_px`` flow px) carries the mask there; the change rule then judges the winner.
    # Why: a camera that follows its subject (a phone panning with a dancer, a tennis player)
    # keeps the person still in the picture while the room streams past, and the dense flow at
    # 160 px, dominated by the room, carries the mask off the person (dance-jump: ~33 flow px
    # along with the background, IoU 0.02 against 0.22 for no compensation). A two-layer motion
    # model, room and subject, at the cost of one residual more. On a still camera both
    # hypotheses agree on the room, and where the person moved the map wins.
    hold_still: bool = True
    hold_box_px: int = 3
    # Colour gate (the room can only appear in the room's colours): a changed pixel is hidden
    # only where its colour is plausibly the room's: log p(colour | room) - log p(colour |
    # person) > ``colour_llr``, from Lab histograms (``colour_bins`` per axis) of the mask frame:
    # the sure person (mask eroded 2 flow px) vs the room near the person (outside the mask
    # dilated 2 px, within ``colour_near_px``: the room a move can uncover). Why: a 2 s old
    # picture of a moving person differs from the current one about as much as the room does
    # (docs/motion.md, --separability), so the residual alone hid a quarter of a juggler; their
    # colours mostly differ. -0.5: hide when P(room | colour) > 0.38 at equal priors, i.e. the
    # room shown counted ~1.6x as bad as the person blurred (privacy first); chosen in the lab
    # among -2 / -0.5 / 0 / +1 (docs/motion.md). None: no gate (the residual alone).
    colour_llr: float | None = -0.5
    colour_bins: int = 32
    colour_near_px: int = 20
    # Exposure and white balance: before the residual, the mask frame's colours are scaled per
    # channel by this frame's gain over it, the median ratio over the room the carried mask
    # shows (``_exposure_gains``). Why: webcams change gain and white balance all the time (a
    # person leaning in, a cloud), and a change that is no motion is no reason to hide: with a
    # synthetic +-20 % drift, sitting at S = 2 s fell to IoU 0.78 and 4.3 % person blurred
    # (docs/motion.md). A gain is the right model: exposure scales linear light, and a power
    # law (the camera's gamma) keeps a scale a scale.
    match_exposure: bool = True


@dataclass
class Tracked:
    alpha: np.ndarray  # same shape/dtype as the alpha given to new_mask, carried to this frame
    hidden_share: float  # share of the frame hidden by the change rule (0..1)
    ms: float  # compensation cost for this frame: observe + track (+ new_mask if one came)
    # this frame in colour at flow resolution: box-averaged by 2^n through exact halvings (the
    # compositor's guide when that is its grid: compose.render's ``guide``); None if grey
    picture: np.ndarray | None = None


@dataclass
class _Entry:
    frame_id: int
    grey: np.ndarray  # uint8, flow resolution
    # int16 HxWx2, flow px x FLOW_Q (1/32 px steps, +-1024 px): this frame -> previous observed
    # frame. Fixed point rather than float16: the same 2 bytes, but numpy's float16 conversion
    # costs ~0.2 ms per frame at 160x90, the int16 one ~0.02 ms.
    back: np.ndarray | None


FLOW_Q = 32.0
_REPLICATE = cv2.BORDER_REPLICATE


def _identity(h: int, w: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.dstack([xs, ys])


def _halved(img: np.ndarray, n: int) -> np.ndarray:
    """``img`` halved ``n`` times (exact halvings are 2x2 box averages, the cheapest downscale)."""
    for _ in range(n):
        h, w = img.shape[:2]
        img = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
    return img


def _small(frame: np.ndarray, halvings: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Frame -> grey and colour (None for a grey stream) at flow resolution, the frame shrunk
    by ``2 ** halvings`` in box means; grey made from the small colour picture.

    Why the last two halvings as one 4x4 box mean (``kernels.box_down4``): it is the picture the
    compositor's guided filter takes from here (``compose._guide_into``: the same pass, so the
    two are identical), and one pass over the frame instead of a colour halving, a grey
    conversion at half size and two more halvings: ~0.14 vs ~0.24 ms a frame at 640x360. Grey
    from the small colour rather than the reverse: both are linear (up to rounding, one level)."""
    if frame.ndim == 3 and frame.shape[2] == 3 and halvings >= 2:
        img = np.ascontiguousarray(_halved(frame, halvings - 2))
        small = np.empty((img.shape[0] // 4, img.shape[1] // 4, 3), np.uint8)
        kernels.box_down4(img, small)
    else:
        small = _halved(frame, halvings)
        small = small.copy() if small is frame else small  # kept longer than the caller's
    if small.ndim != 3:
        return small, None
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), small


def _colour_index(small_bgr: np.ndarray, bins: int) -> np.ndarray:
    """Flat Lab histogram bin of every pixel."""
    q = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2Lab).astype(np.int32) * bins >> 8
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


@functools.cache
def _lab_bin_of_bgr_cell(bins: int) -> np.ndarray:
    """For every cell of a ``bins``^3 grid over BGR: the Lab histogram bin of the cell's centre
    colour. Composing the Lab table with it once per mask makes the per-frame lookup a single
    pass over BGR pixels, no colour conversion (one BGR cell spans 256 / bins levels per
    channel, finer than the Lab bins' smoothing)."""
    c = (np.arange(bins) * 256 + 128) // bins
    b, g, r = np.meshgrid(c, c, c, indexing="ij")
    cells = np.dstack([b.ravel(), g.ravel(), r.ravel()]).astype(np.uint8)  # 1 x bins^3 x 3
    return _colour_index(cells, bins).ravel()


def _colour_model(idx: np.ndarray, sel: np.ndarray, bins: int) -> np.ndarray:
    """Normalised Lab histogram of the selected pixels, [1 2 1]-smoothed along each axis (a
    colour one bin away is nearly as likely: lighting and camera noise move colours), mixed 95/5
    with a uniform prior (a colour never seen is unlikely, not impossible)."""
    h = np.bincount(idx[sel], minlength=bins**3).astype(np.float32).reshape(bins, bins, bins)
    for ax in range(3):
        e = np.concatenate([h.take([0], ax), h, h.take([-1], ax)], axis=ax)
        n = e.shape[ax]
        h = 0.25 * e.take(range(n - 2), ax) + 0.5 * e.take(range(1, n - 1), ax)
        h += 0.25 * e.take(range(2, n), ax)
    total = float(h.sum())
    return (0.95 / total) * h.ravel() + 0.05 / bins**3


def _colour_table(
    s: MotionSettings, small_bgr: np.ndarray, small_alpha: np.ndarray
) -> np.ndarray | None:
    """The colour gate's table: log p(colour | room) - log p(colour | person) for every cell of
    a BGR grid (``_lab_bin_of_bgr_cell``), from Lab histograms of the mask frame (flow res).
    None where either side has too few pixels to say anything."""
    if small_bgr.ndim != 3:
        return None
    m = (small_alpha >= 0.5).view(np.uint8)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    r = s.colour_near_px
    near = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    person = cv2.erode(m, disk).view(bool)
    room = (cv2.dilate(m, disk) == 0) & near.view(bool)
    if np.count_nonzero(person) < 16 or np.count_nonzero(room) < 16:
        return None
    idx = _colour_index(small_bgr, s.colour_bins)
    room_p = _colour_model(idx, room, s.colour_bins)
    llr = np.log(room_p) - np.log(_colour_model(idx, person, s.colour_bins))
    return llr[_lab_bin_of_bgr_cell(s.colour_bins)].astype(np.float32)


def _colour_llr(s: MotionSettings, small_bgr: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per flow pixel of this frame: the table's log-likelihood ratio (room vs person) of its
    colour, 3x3-averaged (a single pixel's colour is noisy; a patch of room is what shows)."""
    llr = np.empty(small_bgr.shape[:2], np.float32)
    kernels.colour_lookup(small_bgr, table, s.colour_bins, llr)
    return cv2.blur(llr, (3, 3))


@functools.cache
def _gaussian(sigma: float) -> np.ndarray:
    """The 1-D kernel ``cv2.GaussianBlur`` makes for a float picture and ``sigma``."""
    return cv2.getGaussianKernel(round(sigma * 8 + 1) | 1, sigma, cv2.CV_32F)


def _blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` as float32, Gaussian-blurred. One ``sepFilter2D`` from the uint8 picture with
    ``cv2.GaussianBlur``'s own kernel: blurring a float copy gives the same numbers within 1e-5
    levels, and this skips the copy (~0.02 ms less for a colour picture at 160x90, 0.01 for
    grey)."""
    if sigma <= 0:
        return img.astype(np.float32)
    k = _gaussian(sigma)
    return cv2.sepFilter2D(img, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101)


def _ultrafast_dis(finest_scale: int, patch_stride: int) -> cv2.DISOpticalFlow:
    """OpenCV's DIS flow, preset ULTRAFAST, computing down to pyramid level ``finest_scale``
    with patches every ``patch_stride`` px."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    dis.setFinestScale(finest_scale)
    dis.setPatchStride(patch_stride)
    return dis


def _flows(s: MotionSettings) -> tuple[cv2.DISOpticalFlow, cv2.DISOpticalFlow]:
    """The frame-to-frame flow and the refinement's flow against the mask frame."""
    rs = s.dis_finest_scale if s.refine_finest_scale < 0 else s.refine_finest_scale
    return (
        _ultrafast_dis(s.dis_finest_scale, s.dis_patch_stride),
        _ultrafast_dis(rs, s.refine_patch_stride),
    )


def _flow_works(flows: tuple, shape: tuple[int, int], halvings: int) -> bool:
    """Whether every DIS of ``flows`` accepts frames of ``shape`` at flow res (halved
    ``halvings`` times); where not, the compensator keeps no history: ``track`` says None.

    Why ask DIS itself: it refuses small or very elongated pictures (11x11, 2x12, 13x500; its
    pyramid runs out of pixels), by a rule of its internals. Halvings stop at 16 px, so only
    frames that small to begin with (a tiny test pattern, a hostile peer's 1x1 frames) fail."""
    grey = np.zeros(tuple(n >> halvings for n in shape), np.uint8)
    try:
        for dis in flows:
            dis.calc(grey, grey, None)
    except cv2.error:
        return False
    return True


def _halvings(shape: tuple[int, int], flow_width: int) -> int:
    """How many halvings bring a frame of ``shape`` down to about ``flow_width`` wide."""
    h, w = shape
    n = 0
    while w / 2 ** (n + 1) >= flow_width * 0.75 and h / 2 ** (n + 1) >= 16:
        n += 1
    return n


def _noise_update(noise: float, res: np.ndarray) -> float:
    """Robust sigma (1.4826 x median absolute residual) of this frame vs the previous one seen
    through the flow, on the same blurred pictures the change rule compares; kept as a slow
    running mean (camera gain changes slowly, single frames with motion are outliers the median
    already ignores)."""
    sigma = 1.4826 * float(np.median(res))
    return sigma if noise == 0.0 else 0.8 * noise + 0.2 * sigma


@dataclass
class _Noise:
    """The stream's camera noise: robust sigma (levels) of the frame-to-frame residual after
    motion, for the grey residual and for the colour one (largest channel change, ~2x grey's)."""

    grey: float = 0.0
    colour: float = 0.0


def _threshold(s: MotionSettings, noise: float) -> float:
    """The residual threshold: fixed, and never below ``noise_factor`` x the stream's noise."""
    return max(s.residual_threshold, s.noise_factor * noise)


def _map_of(state: np.ndarray) -> np.ndarray:
    """The state's map [x, y] (channels 0 and 1), a contiguous (h, w, 2) float32 copy.

    Through a complex64 view (a pixel's x and y as one 8-byte element): numpy copies the plain
    ``state[..., :2]`` slice with a 2-long innermost loop per pixel, 0.10-0.15 ms at 160x90 on
    this host, ~15x the copy of one strided element per pixel."""
    h, w = state.shape[:2]
    xy = np.ascontiguousarray(state.view(np.complex64)[..., 0])
    return xy.view(np.float32).reshape(h, w, 2)


def _set_map(state: np.ndarray, xy: np.ndarray) -> None:
    """``state[..., :2] = xy`` (contiguous float32 (h, w, 2)) by the same complex64 view."""
    state.view(np.complex64)[..., 0] = xy.view(np.complex64)[..., 0]


def _new_state(ident: np.ndarray) -> np.ndarray:
    """Flow res HxWx4: [x, y] current pixel -> mask frame coords (identity), accumulated motion
    (0), scratch (the previous frame's blurred grey, so the frame-to-frame residual comes out of
    the remap that advances the map)."""
    st = np.empty(ident.shape[:2] + (4,), np.float32)
    _set_map(st, ident)
    st[..., 2] = 0.0
    return st


def _direct_state(
    dis: cv2.DISOpticalFlow, ident: np.ndarray, grey: np.ndarray, mask_grey: np.ndarray,
    unexplained_px: float,
) -> np.ndarray:  # fmt: skip
    """The state from one direct flow ``grey`` (this frame) -> ``mask_grey`` (no chain): the
    motion on the way is unknown, so it is unbounded everywhere (privacy first)."""
    st = _new_state(ident)
    _set_map(st, ident + dis.calc(grey, mask_grey, None))
    st[..., 2] = unexplained_px
    return st


def _axis_table(n_out: int, n_in: int) -> np.ndarray:
    """Per output pixel of an axis (alpha size ``n_out``, flow size ``n_in``): the flow pixel
    pair and fraction ``cv2.resize(INTER_LINEAR)`` samples (edges clamped as it does), the
    nearest flow pixel as ``INTER_NEAREST`` picks it, and the scale flow px -> alpha px."""
    first, frac = kernels.linear_positions(n_out, n_in)
    t = np.empty((n_out, 5), np.float64)
    t[:, 0] = first
    t[:, 1] = np.minimum(first + 1, n_in - 1)
    t[:, 2] = frac
    t[:, 3] = np.minimum((np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)
    t[:, 4] = n_out / n_in
    return t


_NONE_HIDDEN = np.zeros((0, 0), np.uint8)


def _safe_map(state: np.ndarray) -> np.ndarray:
    """The state's map (current pixel -> mask frame coords, float32 (h, w, 2)), made once per
    frame for that frame's gathers through it (the mask frame, the alpha), with every
    coordinate a finite one at most 2 px beyond the edges: a NaN becomes -1, anything beyond
    is clamped. BORDER_REPLICATE then reads such a pixel as an edge pixel, which is what it
    read before the clamp for all but a NaN (a float map with a NaN makes ``cv2.remap`` return
    NaN).

    Why float and not OpenCV's fixed-point form (``cv2.convertMaps``, which saturates a NaN by
    itself): OpenCV 5's ``cv2.remap`` has a vectorised path for float maps that is 1.5-2x faster
    at 1 and 4 channels (160x90: 0.08 vs 0.12 ms and 0.11 vs 0.22 ms, interleaved; exact
    bilinear weights instead of 1/32 px); the clamp costs ~0.03 ms more than the conversion."""
    xy = _map_of(state)
    cv2.patchNaNs(xy, -1.0)
    h, w = xy.shape[:2]
    cv2.max(xy, (-2.0, -2.0, 0.0, 0.0), dst=xy)
    cv2.min(xy, (w + 1.0, h + 1.0, 0.0, 0.0), dst=xy)
    return xy


def _through(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``img`` (flow res, 1-4 channels) seen through the map ``xy`` (``_safe_map``): bilinear,
    edges repeated."""
    return cv2.remap(img, xy, None, cv2.INTER_LINEAR, borderMode=_REPLICATE)


def _warp_alpha(
    alpha: np.ndarray,
    state: np.ndarray,
    hidden: np.ndarray | None,
    buf: dict[str, np.ndarray],
    xy: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """The mask's alpha seen through the map (``state``, flow res, mask frame coords), resampled
    once at the alpha's own size, 0 where the change rule ``hidden`` it (uint8 at flow res).
    Returns it and how many pixels the hiding took from the person. ``buf`` keeps the axis
    tables between frames.

    An alpha of the flow's own size (640x360, 1280x720, 4:3 frames) is gathered by
    ``cv2.remap`` through ``xy`` (``_safe_map``): several times cheaper than the compiled gather,
    which stays for the other sizes (it also upsamples the map to the alpha's size)."""
    ah, aw = alpha.shape[:2]
    fh, fw = state.shape[:2]
    if (ah, aw) == (fh, fw):
        out = _through(alpha, _safe_map(state) if xy is None else xy)
        if hidden is None:
            return out, 0
        hid = hidden.view(bool)
        n = int(np.count_nonzero(out[hid] > 0))
        out[hid] = 0.0
        return out, n
    if "col" not in buf:
        buf["col"] = _axis_table(aw, fw)
        buf["row"] = _axis_table(ah, fh)
    out = np.empty((ah, aw), np.float32)
    hid = _NONE_HIDDEN if hidden is None else hidden
    n = kernels.warp_alpha(alpha, state, buf["col"], buf["row"], hid, out)
    return out, n


def _band(
    s: MotionSettings, small_alpha: np.ndarray, motion: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The band, flow res: pixels within D + margin of the warped mask's edge, D the largest
    motion since the mask frame within reach (the moving edge is where the motion is, the
    uncovered room next to it may itself be still). ``motion``: per pixel, flow px
    (``unexplained_px`` where the occlusion check failed). Returns the distance to the edge and
    D (uint8 flow px); ``kernels.hide_candidates`` compares them."""
    # distance (flow px) of each pixel inside the warped mask to its edge
    inside = (small_alpha >= 0.5).view(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    # uint8 flow px, rounded up (never below the motion; saturates at 255, more than any
    # distance at flow resolution): 8-bit morphology is the fast one
    motion8 = cv2.convertScaleAbs(motion, beta=0.5)
    finite = cv2.bitwise_and(inside, (motion < s.unexplained_px).view(np.uint8))
    top = cv2.minMaxLoc(motion, mask=finite)[1] if finite.any() else 0.0
    reach = int(min(s.band_max_px, np.ceil(top)))
    if reach > 0:
        k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
        motion8 = cv2.dilate(motion8, k)
    return dist, motion8


def _grow(
    s: MotionSettings,
    out: np.ndarray,
    calm: np.ndarray,
) -> np.ndarray:
    """Grow the hidden set ``out`` (uint8 0/1) by ``hide_grow_px`` with hysteresis: a pixel of
    the grown ring stays visible only where the flow-res analysis vouches for it (``calm``, uint8:
    residual below ``hide_grow_low`` x the threshold, or outside the band; and person there,
    warped alpha >= 0.5). Elsewhere the ring is hidden, as a plain dilation would (the blurred
    border of a change; the working-res alpha's edge, which can reach a flow pixel the flow-res
    alpha calls background). The holes inside a change are closed: where the person's texture
    happens to match the room's, the room would show through."""
    k = 2 * (s.hide_grow_px + s.hide_open_px) + 1
    ring = cv2.dilate(out, np.ones((k, k), np.uint8))
    if s.hide_grow_low <= 0:
        return ring
    big = np.ones((2 * k - 1, 2 * k - 1), np.uint8)
    closed = cv2.erode(cv2.dilate(out, big), big)
    # ring & ~calm, both 0/1: one saturating pass, not numpy's boolean indexing (~0.08 ms)
    return cv2.bitwise_or(closed, cv2.subtract(ring, calm))


def _hidden(
    s: MotionSettings,
    res: np.ndarray,
    thr: float,
    small_alpha: np.ndarray,
    motion: np.ndarray,
) -> np.ndarray | None:
    """The change rule at flow res: uint8 0/1 where the residual ``res`` against the mask frame
    is above ``thr``, the warped alpha calls the pixel (partly) person, within the band (the
    ``motion`` per pixel, see ``_band``); grown. None when nothing is hidden."""
    dist = reach = small_alpha  # unused without the band
    if s.hide_band:
        dist, reach = _band(s, small_alpha, motion)
    out = np.empty(res.shape, np.uint8)
    calm = np.empty(res.shape, np.uint8)
    calm_thr = s.hide_grow_low * thr
    args = (s.hide_band, dist, reach, s.band_margin_px, calm_thr, out, calm)
    if kernels.hide_candidates(res, thr, small_alpha, s.hide_min_alpha, *args) == 0:
        return None
    if s.hide_open_px > 0:
        k = 2 * s.hide_open_px + 1
        out = cv2.erode(out, np.ones((k, k), np.uint8))
    if s.hide_grow_px > 0 and out.any():
        out = _grow(s, out, calm)
    return out if out.any() else None


def _colour_gate_table(
    s: MotionSettings, small_bgr: np.ndarray | None, small_alpha: np.ndarray
) -> np.ndarray | None:
    """The colour gate's table for a new mask (``small_bgr``: the mask frame in colour at flow
    res), or None when the gate is off or cannot say anything."""
    if s.colour_llr is None or not s.hide_unexplained or small_bgr is None:
        return None
    return _colour_table(s, small_bgr, small_alpha)


def _colour_gate(
    s: MotionSettings, small_bgr: np.ndarray | None, table: np.ndarray | None
) -> np.ndarray | None:
    """This frame's colour score at flow res (``small_bgr``: this frame in colour at flow res),
    or None without a table."""
    if table is None or small_bgr is None:
        return None
    return _colour_llr(s, small_bgr, table)


def _mask_ref(
    s: MotionSettings, grey: np.ndarray, small_alpha: np.ndarray, bgr: np.ndarray | None
) -> np.ndarray:
    """What the change rule samples of the mask frame, flow res, float32: [alpha, blurred grey],
    or for the colour residual [alpha, blurred B, G, R].

    Why no grey beside the colour: grey is a weighted mean of B, G, R and the blur is linear, so
    a grey change is never larger than the largest channel change (up to rounding): the colour
    residual (that largest change) already covers it. And 4 channels take ``cv2.remap``'s
    vectorised path; 5 took its generic one (0.11 vs 0.39 ms at 160x90)."""
    if s.residual_colour and bgr is not None:
        return np.dstack([small_alpha, _blurred(bgr, s.residual_blur)])
    return np.dstack([small_alpha, _blurred(grey, s.residual_blur)])


def _residual_after_flow(prev: np.ndarray, cur: np.ndarray, back: np.ndarray) -> np.ndarray:
    """|this frame - the previous one seen through the flow ``back`` (absolute coordinates)|,
    both blurred; for colour, the largest channel change (the change rule's residual)."""
    res = cv2.absdiff(cur, cv2.remap(prev, back, None, cv2.INTER_LINEAR, None, _REPLICATE))
    if res.ndim != 3:
        return res
    # not res.max(axis=2): numpy's reduction over a 3-long last axis took ~0.8 ms at 160x90
    return np.maximum(np.maximum(res[..., 0], res[..., 1]), res[..., 2])


def _colour_noise(
    s: MotionSettings, noise: float, prev: np.ndarray | None, cur: np.ndarray | None,
    back: np.ndarray,
) -> float:  # fmt: skip
    """The colour residual's noise, updated (``_noise_update``) from this frame vs the previous
    one (``cur``, ``prev``: in colour at flow res and blurred as the change rule compares them,
    see ``_FlowColour``; None for a grey stream)."""
    if not s.residual_colour or prev is None or cur is None or prev.shape != cur.shape:
        return noise
    return _noise_update(noise, _residual_after_flow(prev, cur, back))


class _FlowColour:
    """One frame in colour at flow resolution (``plain``: the colour gate; None for a grey
    stream) and blurred (the colour residual and the noise measure), made once when first asked
    for: the change rule and the noise measure both need it, for this frame and the previous."""

    def __init__(self, plain: np.ndarray | None, blur: float):
        self._plain, self._blur = plain, blur
        self._blurred: np.ndarray | None = None

    def plain(self) -> np.ndarray | None:
        return self._plain

    def blurred(self) -> np.ndarray | None:
        if self._blurred is None and self._plain is not None:
            self._blurred = _blurred(self._plain, self._blur)
        return self._blurred


def _compared(mask_ref: np.ndarray, blur_cur: np.ndarray, cur: _FlowColour) -> np.ndarray:
    """This frame's side of the residual, matching ``mask_ref``'s channels after its alpha
    (``_mask_ref``): blurred B, G, R when it holds the mask frame's colour (residual_colour on,
    a colour stream), else the blurred grey as (h, w, 1)."""
    if mask_ref.shape[2] == 4 and cur.plain() is not None:
        return cur.blurred()
    return blur_cur[..., None]


# The exposure match's histogram: ratios in [0.5, 2] in 300 bins (0.5 % steps at 1); values in
# [16, 240] only (dark pixels are mostly noise, bright ones may be clipped); the room is where
# the carried alpha is at most 0.05, and it must be at least 5 % of the pixels looked at, else
# every pixel counts (a person filling the frame: the median is still the still majority).
_EXPOSURE_BINS = 300
_EXPOSURE_LEVELS = (16.0, 240.0)
_EXPOSURE_ROOM = 0.05
_EXPOSURE_MIN_SHARE = 0.05


def _exposure_gains(s: MotionSettings, sampled: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """This frame's gain over the mask frame per channel (``cur`` vs ``sampled``'s channels
    after its alpha; ``kernels.exposure_gains``), float32; 1 where the match is off or too few
    pixels could say.

    Why the room's pixels: they are still, so their change is the camera's; the person's
    pixels also change by their motion. Why the median: what moved or was uncovered is a
    minority the median ignores."""
    n = cur.shape[2]
    gains = np.ones(n, np.float64)
    if s.match_exposure:
        hist = np.empty((n, _EXPOSURE_BINS), np.int64)
        need = _EXPOSURE_MIN_SHARE * ((cur.shape[0] + 1) // 2) * ((cur.shape[1] + 1) // 2)
        for max_alpha in (_EXPOSURE_ROOM, 1.0):
            got = kernels.exposure_gains(sampled, cur, max_alpha, *_EXPOSURE_LEVELS, hist, gains)
            if got >= need:
                return gains.astype(np.float32)
    return np.ones(n, np.float32)


def _hold_still(s: MotionSettings, diff: np.ndarray) -> np.ndarray | None:
    """Where the mask frame in place explains this frame better than through the map (uint8 at
    flow res, see ``MotionSettings.hold_still``): the residual's excess in place (``diff``,
    ``kernels.hold_residuals``) averaged over a box is negative. None when nowhere."""
    k = (s.hold_box_px, s.hold_box_px)
    pick = cv2.compare(cv2.boxFilter(diff, -1, k), 0.0, cv2.CMP_LT)
    return pick if cv2.countNonZero(pick) else None


@dataclass
class _Carried:
    """The mask frame carried to this frame (``_carried``): what was sampled of ``_mask_ref``,
    the residual against this frame (``kernels.hold_residuals``, exposure matched; ``colour``:
    of B, G, R rather than grey), the state and its map (``_safe_map``) with held pixels at
    identity."""

    sampled: np.ndarray
    res: np.ndarray
    colour: bool
    state: np.ndarray
    xy: np.ndarray


def _carried(
    s: MotionSettings,
    mask_ref: np.ndarray,
    compared: np.ndarray,
    state: np.ndarray,
    ident: np.ndarray,
) -> _Carried:
    """The mask frame (``mask_ref``) carried to this frame (``compared``, see ``_compared``):
    through the state's map, or in place where that explains this frame better
    (``_hold_still``). ``state`` is not changed: held pixels get a copy."""
    xy = _safe_map(state)
    sampled = _through(mask_ref, xy)
    gains = _exposure_gains(s, sampled, compared)
    res = np.empty(compared.shape[:2], np.float32)
    diff = np.empty_like(res)
    kernels.hold_residuals(sampled, mask_ref, compared, gains, res, diff)
    pick = _hold_still(s, diff) if s.hold_still else None
    if pick is not None:
        kernels.hold_in_place(pick, mask_ref, sampled, ident, xy, res, diff)
        state = state.copy()
        _set_map(state, xy)
    return _Carried(sampled, res, compared.shape[2] == 3, state, xy)


def _change_rule(
    s: MotionSettings,
    carried: _Carried,
    cur: _FlowColour,
    table: np.ndarray | None,
    noise: _Noise,
) -> np.ndarray | None:
    """The change rule: the mask frame as carried to this frame (``carried``) vs this frame
    (``cur``: in colour at flow res), with the colour gate (``table``, see ``_colour_table``)
    only where the colour is plausibly the room's; the threshold above the stream's ``noise``
    of the residual used. Returns where motion does not explain the change (uint8 at flow
    res), or None."""
    res = carried.res
    small_alpha = np.empty(res.shape, np.float32)
    motion = np.empty(res.shape, np.float32)
    threshold = _threshold(s, noise.colour if carried.colour else noise.grey)
    args = (threshold, s.band_path, s.unexplained_px, small_alpha, motion)
    if kernels.rule_inputs(carried.sampled, carried.state, res, *args) == 0:
        return None
    llr = _colour_gate(s, cur.plain(), table)
    if llr is not None:
        np.copyto(res, 0.0, where=llr <= s.colour_llr)  # the person's colours: not the room
    return _hidden(s, res, threshold, small_alpha, motion)


def warm_up() -> None:
    """Run the compiled steps once on a small moving picture, so that loading them (or, on the
    first run after an install, compiling them) happens at start-up, not on a frame."""
    comp = MotionCompensator(MotionSettings(history_frames=4))
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[20:70, 40:90] = 200
    alpha = np.zeros((90, 160), np.float32)
    alpha[20:70, 40:90] = 1.0
    comp.observe(0, frame)
    comp.new_mask(alpha, 0, frame)
    moved = np.roll(frame, 6, axis=1)
    comp.observe(1, moved)
    comp.track(1, moved)
    res = np.zeros(alpha.shape, np.float32)
    res[20:30, 40:50] = 100.0  # a change at the edge: the rule's whole path
    _hidden(comp.settings, res, 24.0, alpha, np.zeros_like(res))


class MotionCompensator:
    """Carries the newest mask to every shown frame. See the module docstring."""

    def __init__(
        self,
        settings: MotionSettings = MotionSettings(),  # noqa: B008 (frozen, immutable)
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.settings = settings
        self.clock = clock
        self._dis, self._dis_ref = _flows(settings)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the stream changed (new source, new frame size)."""
        self._shape: tuple[int, int] | None = None  # (h, w) of the frames
        self._halvings, self._flowable = 0, False  # flow resolution; DIS accepts it (_flow_works)
        self._history: deque[_Entry] = deque(maxlen=max(2, self.settings.history_frames))
        self._ident: np.ndarray | None = None
        self._noise = _Noise()
        self._observe_ms = 0.0
        self._mask_ms = 0.0  # new_mask's cost, reported with the next track()
        self._frames_seen = 0
        self._blur_cur: np.ndarray | None = None  # blurred grey of the newest frame (float32)
        self._cur_colour: _FlowColour | None = None  # the newest frame in colour at flow res
        self._prev_colour: _FlowColour | None = None  # the frame before it, likewise
        self._colour: np.ndarray | None = None  # the active mask's colour table (_colour_table)
        # the active mask: alpha, the mask frame at flow res (uint8, for DIS) and what the change
        # rule samples of it (_mask_ref); the state (see _new_state)
        self._alpha: np.ndarray | None = None
        self._mask_grey8: np.ndarray | None = None
        self._mask_ref: np.ndarray | None = None
        self._state: np.ndarray | None = None
        self._cum_id: int | None = None  # frame the map is up to date for
        self._since_refine = 0
        self._buf: dict[str, np.ndarray] = {}

    @property
    def history_len(self) -> int:
        return len(self._history)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the history (bounded by ``history_frames``)."""
        return sum(e.grey.nbytes + (0 if e.back is None else e.back.nbytes) for e in self._history)

    def _advance(self, back: np.ndarray, blur_prev: np.ndarray | None = None) -> np.ndarray | None:
        """``back``: float32 flow this frame -> previous frame. Extend the state by one frame:
        cum'(x) = cum(x + back(x)), the accumulated motion likewise plus |back(x)|. With
        ``blur_prev`` (the previous frame, blurred) it is sampled at the same places and the
        frame-to-frame residual of the newest frame is returned."""
        st = self._state
        if blur_prev is not None:
            st[..., 3] = blur_prev
        st = cv2.remap(st, self._ident + back, None, cv2.INTER_LINEAR, borderMode=_REPLICATE)
        st[..., 2] += cv2.magnitude(back[..., 0], back[..., 1])
        self._state = st
        return None if blur_prev is None else cv2.absdiff(self._blur_cur, st[..., 3])

    def _occlusion_check(self, res: np.ndarray) -> None:
        """Where the frame-to-frame residual fails, the motion becomes unbounded."""
        s = self.settings
        if s.hide_band and s.hide_unexplained:
            acc = self._state[..., 2]
            np.add(acc, s.unexplained_px, out=acc, where=res > _threshold(s, self._noise.grey))

    def _refine(self, grey: np.ndarray, force: bool = False) -> None:
        """Refine the map by a direct flow current -> mask frame, initialised with the map."""
        s = self.settings
        if not s.refine_direct or self._mask_grey8 is None:
            return
        self._since_refine += 1
        if not force and self._since_refine < max(1, s.refine_every):
            return
        self._since_refine = 0
        init = _map_of(self._state) - self._ident
        flow = self._dis_ref.calc(grey, self._mask_grey8, init)
        _set_map(self._state, self._ident + flow)

    def observe(self, frame_id: int, frame: np.ndarray) -> None:
        """Every frame the compositor receives, in order (BGR uint8, full size)."""
        t0 = self.clock()
        s = self.settings
        if frame.shape[:2] != self._shape:
            self.reset()
            self._shape = frame.shape[:2]
            self._halvings = _halvings(self._shape, s.flow_width)
            self._flowable = _flow_works((self._dis, self._dis_ref), self._shape, self._halvings)
        if not self._flowable:  # no history: the mask is applied uncompensated (--no-motion)
            return
        self._prev_colour = self._cur_colour
        grey, colour = _small(frame, self._halvings)
        self._cur_colour = _FlowColour(colour, s.residual_blur)
        if self._ident is None:
            self._ident = _identity(*grey.shape)
        blur_prev = self._blur_cur
        self._blur_cur = _blurred(grey, s.residual_blur)
        back = None
        if self._history:
            prev = self._history[-1]
            flow = self._dis.calc(grey, prev.grey, None)
            back = np.rint(flow * FLOW_Q).astype(np.int16)
            self._frames_seen += 1
            measure = self._frames_seen % s.noise_every == 1
            if measure and self._prev_colour is not None:
                args = (self._prev_colour.blurred(), self._cur_colour.blurred(), self._ident + flow)
                self._noise.colour = _colour_noise(s, self._noise.colour, *args)
            if self._state is not None and self._cum_id == prev.frame_id:
                res = self._advance(flow, blur_prev)
                if measure:
                    self._noise.grey = _noise_update(self._noise.grey, res)
                self._occlusion_check(res)
                self._refine(grey)
                self._cum_id = frame_id
            elif measure:
                res = _residual_after_flow(blur_prev, self._blur_cur, self._ident + flow)
                self._noise.grey = _noise_update(self._noise.grey, res)
        self._history.append(_Entry(frame_id, grey, back))
        self._observe_ms = (self.clock() - t0) * 1e3

    def new_mask(self, alpha: np.ndarray, frame_id: int, mask_frame: np.ndarray) -> None:
        """A new mask was accepted: ``alpha`` (float32 0..1, any size, frame aspect) computed on
        frame ``frame_id``, whose full picture is ``mask_frame``."""
        t0 = self.clock()
        try:
            self._new_mask(alpha, frame_id, mask_frame)
        finally:
            self._mask_ms += (self.clock() - t0) * 1e3

    def _new_mask(self, alpha: np.ndarray, frame_id: int, mask_frame: np.ndarray) -> None:
        if self._shape is None or mask_frame.shape[:2] != self._shape or not self._history:
            # Another stream's mask (or nothing observed yet, or no flow): it cannot be carried
            # to these frames. Drop it; the compositor fails closed or shows it uncompensated.
            self._alpha = self._state = None
            return
        s = self.settings
        self._alpha = np.ascontiguousarray(alpha, dtype=np.float32)
        hist = list(self._history)
        idx = next((i for i, e in enumerate(hist) if e.frame_id == frame_id), None)
        grey, bgr = _small(mask_frame, self._halvings)
        grey = hist[idx].grey if idx is not None else grey
        small = cv2.resize(self._alpha, grey.shape[::-1], interpolation=cv2.INTER_AREA)
        self._mask_ref = _mask_ref(s, grey, small, bgr)
        self._colour = _colour_gate_table(s, bgr, small)
        self._mask_grey8 = grey
        self._state = _new_state(self._ident)
        if idx is not None and s.chain:
            self._replay(hist[idx:])
        elif idx is None or idx != len(hist) - 1:
            args = (self._dis, self._ident, hist[-1].grey, grey)
            self._state = _direct_state(*args, s.unexplained_px)
        self._refine(hist[-1].grey, force=True)
        self._cum_id = hist[-1].frame_id
        self._buf = {}

    def _replay(self, entries: list[_Entry]) -> None:
        """Carry the map over every frame since F; the frame-to-frame residuals are recomputed
        from the stored grey copies (blurred once each), so a disocclusion or a cut on the way
        counts as unbounded motion exactly as if the mask had been there all along."""
        s = self.settings
        check = s.hide_band and s.hide_unexplained
        blur_prev = _blurred(entries[0].grey, s.residual_blur) if check else None
        keep = self._blur_cur
        for e in entries[1:]:
            back = e.back.astype(np.float32) * (1.0 / FLOW_Q)
            if check:
                last = e is entries[-1]
                self._blur_cur = keep if last else _blurred(e.grey, s.residual_blur)
                self._occlusion_check(self._advance(back, blur_prev))
                blur_prev = self._blur_cur
            else:
                self._advance(back)
        self._blur_cur = keep

    def track(self, frame_id: int, frame: np.ndarray) -> Tracked | None:
        """The alpha to apply to this frame (``observe`` was called for it just before)."""
        if self._alpha is None or self._state is None or not self._history:
            return None
        t0 = self.clock()
        cur = self._history[-1]
        if self._cum_id != cur.frame_id:
            # observe() missed this frame (should not happen): a direct flow, never the mask as is
            args = (self._dis, self._ident, cur.grey, self._mask_grey8)
            self._state = _direct_state(*args, self.settings.unexplained_px)
            self._cum_id = cur.frame_id
        s, hidden = self.settings, None
        cur_c = self._cur_colour
        compared = _compared(self._mask_ref, self._blur_cur, cur_c)
        got = _carried(s, self._mask_ref, compared, self._state, self._ident)
        if s.hide_unexplained:
            hidden = _change_rule(s, got, cur_c, self._colour, self._noise)
        alpha, n_hidden = _warp_alpha(self._alpha, got.state, hidden, self._buf, got.xy)
        # this frame's picture (the change rule made it); none if observe() skipped this frame
        picture = self._cur_colour.plain() if cur.frame_id == frame_id else None
        ms = self._observe_ms + self._mask_ms + (self.clock() - t0) * 1e3
        self._mask_ms = 0.0
        return Tracked(alpha, n_hidden / alpha.size, ms, picture)

"""Compositing: turn a soft person mask and a camera frame into the privacy-mode picture.

What the tutorial did and why we don't: it pasted a binary Mask R-CNN mask over a full-resolution
``GaussianBlur(frame, (41, 41))``. The hard edge looks cut out, the blur mixes the person's colours
into the background right next to them (a halo that also reveals the silhouette), and the 41x41
blur is the most expensive thing per frame. Here instead:

* per mask (``accept_mask``, 1-30 times/s): the model's probability is brought to the *mask grid*
  (~160 px wide, frame / integer k) and smoothed over time only where it was uncertain in both
  the previous and the new mask (flicker), never where it was confident in either (motion);
* per frame (``render``, camera rate): guided upsampling of that probability with THIS frame: a
  colour guided filter (He et al.) on the grid, radius tied to the model's grid (a few model
  cells: how far the model's edge is typically off), whose coefficients are interpolated per
  pixel and applied to the pixel's own colour. The edge therefore moves to an image edge only
  where the frame has one near the mask's boundary (where it has none, the coefficients fall to
  a local mean of the model's probability: the edge stays where the model put it). Per-pixel
  work happens only in the band of grid cells where the edge can be; elsewhere a pixel is the
  frame or the background by its cell's class (no float pass over the full frame). Background:
  a mask-weighted, normalised blur below the grid's resolution (no person colour in it), upsampled.

Every building block is a pure function; ``ComposeState`` only holds the latest mask, the opened
background and buffers reused between frames (keyed by frame shape).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from common.errors import FatalError
from common.protocol import same_aspect
from compositor import kernels
from compositor.background import (  # noqa: F401  (fit_background: part of the compose API)
    Background,
    ColorBackground,
    fit_background,
    open_background,
)
from compositor.config import CompositorConfig

# The mask grid: the resolution the accepted mask is stored at and the guided filter's coefficients
# are computed at (also the background blur's). ~160 px wide, frame size / an integer k (a frame
# that is not a multiple of k is padded at the bottom/right). Why that coarse: the guided filter's
# coefficients are box averages over several grid px, smooth by construction, so computing them
# on a coarse grid and interpolating them per pixel loses nothing measurable (fast guided filter,
# He & Sun 2015); measured: coefficients on a 160 px grid score the same as on 320 px
# (docs/compositing.md). The per-pixel work is then done only in the band near the edge.
WORK_WIDTH = 160
# Width of the model's own output grid when the mask arrives upsampled to frame size (selfie:
# 256 px wide, both builds). A mask smaller than the frame is taken as the model's grid itself.
MODEL_GRID_WIDTH = 256
# Guided filter: radius in model cells (the model's edge is typically off by a few cells of its
# grid, so that is how far the edge may move to an image edge); eps relative to colour in
# [0, 1]^3: a colour change of sqrt(eps) ~ 0.003 (1 level) inside the window already counts as an
# edge, i.e. the frame decides wherever it has any edge. Chosen on all five shared sets for the
# largest worst-set gain in boundary F (radius 2/3/5/8 cells x eps 1e-5/1e-4/1e-3); leaving each
# set out picks the same values on the other four in 4 of 5 cases (docs/compositing.md).
GF_RADIUS_CELLS = 5.0
GF_EPS = 1e-5
# Output: smoothstep between these values of the filtered probability (an antialiased edge about
# one pixel wide, centred on the model's own decision boundary 0.5).
OUT_LOW = 0.4
OUT_HIGH = 0.6
# Grid cells whose filtered value is within this of 0.5 get per-pixel work (plus cells next to a
# class change, plus one cell around both). 0.35: values 0.15..0.85, where a pixel's own colour
# can move the output across the smoothstep.
BAND_MARGIN = 0.35
BAND_DILATE = False
# Threshold band of ``soft_alpha`` (a building block kept for callers; the refinement no longer
# thresholds before filtering: the guided filter works on the model's probability itself).
BAND_LOW = 0.4
BAND_HIGH = 0.6
DILATE_PX = 0
FEATHER_SIGMA = 1.0
# Grey guided filter defaults (``guided_filter`` building block).
GF_RADIUS = 4
GF_GREY_EPS = 1e-2
# Tutorial look: GaussianBlur ksize 41 -> sigma 0.3*((41-1)/2-1)+0.8 = 6.5 px on a 600 px wide
# 16:9 frame, i.e. 337.5 px high.
TUTORIAL_SIGMA = 6.5
TUTORIAL_SHORT_SIDE = 600 * 9 / 16
# Temporal smoothing: weight of the previous mask where the new one is exactly 0.5.
TEMPORAL_KEEP = 0.85
# Fail-closed blur: sigma as a fraction of the working width (1/10: only colour blobs remain).
FAIL_CLOSED_SIGMA_FRACTION = 0.1


@dataclass(frozen=True)
class ComposeSettings:
    """User-facing compositing options (the compositor's command line)."""

    # Strength multiplier (1.0 = the tutorial's kernel 41 at 600 px, scaled to width). Default:
    # the compositor's (compositor/config.py says why), so the look has one default.
    blur: float = CompositorConfig.blur
    background: Path | None = None  # image (scaled/cropped to fill) or video (looped)
    background_color: tuple[int, int, int] | None = None  # BGR
    refine: bool = True  # False = raw model output, bilinear upsampling only (quality baseline)
    temporal: bool = True  # temporal smoothing of the mask between consecutive masks


@dataclass
class Rendered:
    """One composited frame. ``image`` may be a state-owned buffer reused by the next render."""

    image: np.ndarray  # BGR uint8, frame size
    alpha: np.ndarray  # uint8 HxW, 255 = person kept sharp; the alpha actually applied
    fail_closed: bool


@dataclass
class MaskState:
    """The latest accepted mask, already processed for rendering."""

    frame_shape: tuple[int, int]  # (h, w) of the frame the mask belongs to
    # float32 0..1, temporally smoothed model probability: on the mask grid,
    # working_size(frame_shape) (refine), or at the mask's own size (no refine)
    alpha: np.ndarray
    grid_width: int = MODEL_GRID_WIDTH  # width of the model's own output grid


@dataclass
class ComposeState:
    """Latest mask, the opened background and per-frame-shape buffers. Create with ``new_state``."""

    settings: ComposeSettings
    background: Background | None
    mask: MaskState | None = None
    buffers: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)


# --------------------------------------------------------------------------- settings / state


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse a user colour, written as RGB ("#00ff00", "00ff00", "0,255,0"), into BGR.

    Why RGB in, BGR out: users copy colours from web pickers (RGB); OpenCV images are BGR.
    """
    s = text.strip()
    m = re.fullmatch(r"#?([0-9a-fA-F]{6})", s)
    if m:
        v = m.group(1)
        r, g, b = (int(v[i : i + 2], 16) for i in (0, 2, 4))
        return (b, g, r)
    parts = [p.strip() for p in s.split(",")]
    if len(parts) == 3 and all(re.fullmatch(r"\d{1,3}", p) for p in parts):
        r, g, b = (int(p) for p in parts)
        if max(r, g, b) <= 255:
            return (b, g, r)
    raise FatalError(
        f"bad colour {text!r}: write it as RGB hex '#00ff00' or as 'R,G,B' with values 0-255"
    )


def new_state(settings: ComposeSettings) -> ComposeState:
    """Validate settings and open the background; bad files raise ``FatalError`` here, not later."""
    if not np.isfinite(settings.blur) or settings.blur < 0:
        raise FatalError(f"--blur must be a number >= 0, got {settings.blur}")
    if settings.background is not None and settings.background_color is not None:
        raise FatalError("use either --background or --background-color, not both")
    background: Background | None = None
    if settings.background is not None:
        background = open_background(Path(settings.background))
    elif settings.background_color is not None:
        color = tuple(int(c) for c in settings.background_color)
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise FatalError(f"background colour must be 3 values 0-255, got {color}")
        background = ColorBackground(color)  # type: ignore[arg-type]
    return ComposeState(settings=settings, background=background)


# --------------------------------------------------------------------------- pure building blocks


def working_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the mask grid for a frame: frame / k, k = round(width / WORK_WIDTH), rounded up.

    Rounded up: a frame that is not a multiple of k is treated as padded to one (edge pixels
    repeated), so every grid cell is exactly k x k frame pixels.
    """
    factor = max(1, round(width / WORK_WIDTH))
    return -(-height // factor), -(-width // factor)


def blur_sigma(height: int, width: int, strength: float) -> float:
    """Background blur sigma in px for a picture of ``height`` x ``width``: the tutorial's look
    times ``strength``, scaled with the picture's shorter side.

    Why the shorter side and not the width: what the blur must hide is sized relative to the
    picture the other side sees (text a quarter of the frame high, tests/test_blur_default.py).
    Scaled with the width, a 4:3 camera got a third less blur than a 16:9 one for the same
    text: 8 % of its contrast left at 640x480 against 1 % at 640x360. 16:9 frames are unchanged.
    """
    return TUTORIAL_SIGMA * min(height, width) / TUTORIAL_SHORT_SIDE * strength


def soft_alpha(
    prob: np.ndarray,
    low: float = BAND_LOW,
    high: float = BAND_HIGH,
    dilate_px: int = DILATE_PX,
    feather_sigma: float = FEATHER_SIGMA,
) -> np.ndarray:
    """Person probability (float 0..1) -> soft alpha (float32 0..1).

    Why a band instead of one threshold: a hard cut at 0.5 flips pixels on and off from frame to
    frame and looks cut out; a smoothstep between ``low`` and ``high`` keeps the model's own
    uncertainty as a narrow soft edge. Dilation keeps thin hair/shoulder edges the model
    under-segments; feathering removes the staircase of the upsampled model output.
    """
    t = np.clip((prob.astype(np.float32, copy=False) - low) / (high - low), 0.0, 1.0)
    a = t * t * (3.0 - 2.0 * t)
    if dilate_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        a = cv2.dilate(a, k)
    if feather_sigma > 0:
        a = cv2.GaussianBlur(a, (0, 0), feather_sigma)
    return a


def temporal_smooth(
    prev: np.ndarray, new: np.ndarray, prob: np.ndarray, keep: float = TEMPORAL_KEEP
) -> np.ndarray:
    """Blend the previous alpha ``prev`` into ``new`` only where the model is uncertain.

    ``prob`` is the new model probability the uncertainty is read from: full smoothing (weight
    ``keep`` for ``prev``) for 0.3 <= p <= 0.7, none below 0.1 or above 0.9, linear in between.
    Why not a plain moving average: that leaves a ghost of the person wherever they were a few
    frames ago; here confident pixels (a person who moved, background uncovered) take the new
    value at once, while the boundary band, where the model flips between frames, is averaged.
    Why smooth the alpha and not the probability: the threshold band in between turns a small
    flip of p around 0.5 into a full 0 <-> 1 flip, so it has to be averaged after the band.
    """
    u = np.clip((0.8 - np.abs(2.0 * prob - 1.0)) * 2.5, 0.0, 1.0)
    w = keep * u
    return (new + w * (prev - new)).astype(np.float32, copy=False)


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1
    return cv2.boxFilter(x, -1, (k, k), borderType=cv2.BORDER_REFLECT)


def guided_filter_coefficients(
    guide: np.ndarray, src: np.ndarray, radius: int = GF_RADIUS, eps: float = GF_GREY_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Box-averaged linear coefficients (a, b) of the guided filter: output = a * guide + b.

    Why return coefficients: (a, b) are smooth, so they can be computed at low resolution,
    upsampled bilinearly and applied to the full-resolution guide ("fast guided filter"): the
    output then follows full-resolution edges at a fraction of the cost. Built from boxFilter
    because cv2.ximgproc is not part of opencv-python.
    """
    guide = guide.astype(np.float32, copy=False)
    src = src.astype(np.float32, copy=False)
    mean_i = _box(guide, radius)
    mean_p = _box(src, radius)
    cov_ip = _box(guide * src, radius) - mean_i * mean_p
    var_i = _box(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, radius), _box(b, radius)


def guided_filter(
    guide: np.ndarray, src: np.ndarray, radius: int = GF_RADIUS, eps: float = GF_GREY_EPS
) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` guided by ``guide`` (both float, same size)."""
    a, b = guided_filter_coefficients(guide, src, radius, eps)
    return a * guide.astype(np.float32, copy=False) + b


def halo_free_blur(image: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Blur the background of ``image`` without the person's colours: blur(I*w) / blur(w).

    ``w`` is the background weight: 1 - 2*alpha clipped, so only pixels that are more background
    than person contribute. Why: a plain blur averages the person into the pixels around them, a
    visible halo that also outlines the silhouette. Where no background is near (deep inside the
    person) the unblurred image fills in instead of a division by zero: it is the person's own
    colour there, and the blend shows the person at those pixels anyway.
    """
    if sigma <= 0:
        return image.copy()
    wgt = np.clip(1.0 - 2.0 * alpha.astype(np.float32), 0.0, 1.0)
    return _weighted_blur(image, wgt, sigma)


def _weighted_blur(image: np.ndarray, wgt: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 ``image`` (HxWx3), float32 weights 0..1 (HxW): blur(I*w) / blur(w), uint8.

    One 4-channel Gaussian for numerator and denominator, every step a single call on the
    interleaved array (no split/merge): on a grid of a few thousand pixels the per-call
    overhead is the cost.
    """
    h, w = wgt.shape
    stack = np.empty((h, w, 4), np.float32)
    np.multiply(image, wgt[..., None], out=stack[..., :3])
    stack[..., 3] = wgt
    return _normalised_blur(stack, image.astype(np.float32), sigma)


def _normalised_blur(stack: np.ndarray, image: np.ndarray, sigma: float) -> np.ndarray:
    """float32 (H, W, 4) = (I*w, w) and the plain image (float32): blur the stack, divide
    (``kernels.normalise``); where no weight is near, ``image``. uint8 (H, W, 3)."""
    blurred = cv2.GaussianBlur(stack, (0, 0), sigma)
    out = np.empty(image.shape, np.uint8)
    kernels.normalise(blurred, image, 1e-3, out)
    return out


def blur_factor(sigma: float) -> int:
    """Extra downscale for the background blur so that sigma stays >= ~1.5 px there.

    Why: a Gaussian that wide has no detail a lower resolution could lose, and blurring a few
    thousand pixels instead of the grid's 14,400 makes it cheap. Not lower: the downscale is a box
    average, whose sidelobes fold fine detail (text, a grating) into coarser patterns; at
    sigma 0.8 px those survived the blur (a grating of text-letter scale kept 10 % of its
    contrast at --blur 4, more than at --blur 3: tests/test_blur_default.py).
    """
    return max(1, int(sigma / 1.5))


def downscale(frame: np.ndarray, height: int, width: int, dst: np.ndarray | None = None):
    """Box-filtered downscale to (height, width).

    Why halvings first: an exact 2x INTER_LINEAR downscale is a 2x2 box average and ~5x cheaper
    than INTER_AREA on the full frame; the frame is halved while it is still at least 4x the
    target, and INTER_AREA finishes on what is left.
    """
    img = frame
    while img.shape[1] >= 4 * width and img.shape[0] >= 4 * height:
        half = (img.shape[1] // 2, img.shape[0] // 2)
        img = cv2.resize(img, half, interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, (width, height), dst=dst, interpolation=cv2.INTER_AREA)


def blend(
    frame: np.ndarray,
    background: np.ndarray,
    alpha: np.ndarray,
    out: np.ndarray | None = None,
    scratch: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """out = frame * alpha/255 + background * (1 - alpha/255), all uint8 (alpha HxW).

    Why uint8 multiplies: cv2.multiply with scale on uint8 is SIMD and ~2x faster than a float
    blend (cv2.blendLinear) at 720p; alpha 255 returns the frame exactly, 0 the background.
    """
    s = scratch if scratch is not None else {}
    shape = frame.shape
    a3 = s.get("a3")
    if a3 is None or a3.shape != shape:
        a3 = s["a3"] = np.empty(shape, np.uint8)
        s["i3"] = np.empty(shape, np.uint8)
        s["t1"] = np.empty(shape, np.uint8)
        s["t2"] = np.empty(shape, np.uint8)
    if out is None:
        out = np.empty(shape, np.uint8)
    cv2.cvtColor(alpha, cv2.COLOR_GRAY2BGR, dst=a3)
    cv2.bitwise_not(a3, dst=s["i3"])
    cv2.multiply(frame, a3, dst=s["t1"], scale=1 / 255.0)
    cv2.multiply(background, s["i3"], dst=s["t2"], scale=1 / 255.0)
    cv2.add(s["t1"], s["t2"], dst=out)
    return out


def fail_closed_image(
    frame: np.ndarray, dst: np.ndarray | None = None, cache: dict | None = None
) -> np.ndarray:
    """The whole frame blurred so strongly that only colour blobs remain (nothing recognisable).

    Done at 1/40 of the width (a blur of sigma = 1/10 of the width has nothing finer than that
    to keep), reached by exact halvings and one INTER_AREA step (``downscale``): fail-closed
    frames must never lower the frame rate. Measured against the previous 1/20 with a single
    INTER_AREA: 3.8 -> 2.1 ms at 1280x720, 7.2 -> 4.0 ms at 1080p (one thread; most of what is
    left is writing the full frame), the picture within ~1 level. Enlarged by
    ``_upsample_into`` (its taps and buffers kept in ``cache`` if given).
    """
    h, w = frame.shape[:2]
    ws = max(8, w // 40)
    hs = max(4, round(h * ws / w))
    tiny = cv2.GaussianBlur(downscale(frame, hs, ws), (0, 0), FAIL_CLOSED_SIGMA_FRACTION * ws)
    out = dst if dst is not None else np.empty((h, w, 3), np.uint8)
    _upsample_into(tiny, out, {} if cache is None else cache)
    return out


def tutorial_composite(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The tutorial's method, kept as the baseline for tests and benchmarks.

    Full-resolution GaussianBlur (41, 41) and a binary paste of the person (mask >= 128). The
    paste uses cv2.copyTo, the fastest way to do it (numpy boolean indexing, as in the tutorial,
    is several ms slower at 720p), so speed comparisons do not flatter our method.
    """
    out = cv2.GaussianBlur(frame, (41, 41), 0)
    cv2.copyTo(frame, (mask >= 128).view(np.uint8), out)
    return out


def warm_up() -> None:
    """Run every compiled kernel once on a small synthetic frame, so that loading them (or, on the
    first run after an install, compiling them: seconds) happens at start-up, not on a frame."""
    h, w = 90, 160
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, w // 2 :] = 200
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 3 :] = 255  # an edge away from the frame's own: band cells on both sides
    state = new_state(ComposeSettings())
    accept_mask(state, mask, frame, continuous=False)
    render(state, frame, privacy=True, mask_ok=True)


# --------------------------------------------------------------------------- per mask


def _grid_factor(width: int) -> int:
    return max(1, round(width / WORK_WIDTH))


def _padded(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``img`` extended (edge pixels repeated) to ``height`` x ``width`` at the bottom/right."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    return cv2.copyMakeBorder(img, 0, height - h, 0, width - w, cv2.BORDER_REPLICATE)


def accept_mask(
    state: ComposeState, mask: np.ndarray, guide: np.ndarray | None, *, continuous: bool
) -> None:
    """Take a new person mask (uint8 0..255, frame-sized or smaller with the frame's aspect).

    ``guide`` is the frame the mask was computed on; only its size is used here (the mask is
    applied to later frames, so the edge refinement uses the frame being rendered instead).
    ``continuous=False`` (unrelated stills) disables temporal smoothing for this mask.

    Stored (``state.mask.alpha``, float32 0..1): with refinement, the model's probability on the
    *mask grid*, ``working_size(frame)`` (~160 px wide, frame size / an integer k; the frame is
    thought of as padded to a multiple of k at the bottom/right). Without refinement, the
    probability at the mask's own size. Temporal smoothing is applied to this stored array.
    """
    if mask.ndim == 3:
        mask = mask[..., 0]
    fh, fw = guide.shape[:2] if guide is not None else mask.shape[:2]
    settings = state.settings
    grid_width = min(mask.shape[1], MODEL_GRID_WIDTH)
    if settings.refine:
        hs, ws = working_size(fh, fw)
        k = _grid_factor(fw)
        if (hs * k, ws * k) != (fh, fw):  # frame not a multiple of k: pad like the frame
            if mask.shape != (fh, fw):
                mask = cv2.resize(mask, (fw, fh), interpolation=cv2.INTER_LINEAR)
            mask = _padded(mask, hs * k, ws * k)
        if mask.shape != (hs, ws):
            interp = cv2.INTER_AREA if mask.shape[1] > ws else cv2.INTER_LINEAR
            mask = cv2.resize(mask, (ws, hs), interpolation=interp)
    prob = mask.astype(np.float32) * (1.0 / 255.0)
    prev = state.mask
    if settings.temporal and continuous and prev is not None and prev.alpha.shape == prob.shape:
        # Smooth only where the model is uncertain in BOTH masks: flicker is uncertainty that
        # stays in place; a moving edge leaves confident pixels behind and ahead of it, and
        # smoothing those makes the edge lag (measured: -0.03 IoU on the fast DAVIS clips).
        prev_p = prev.alpha
        surer = np.where(np.abs(prev_p - 0.5) > np.abs(prob - 0.5), prev_p, prob)
        prob = temporal_smooth(prev_p, prob, surer, TEMPORAL_KEEP)
    state.mask = MaskState(frame_shape=(fh, fw), alpha=prob, grid_width=grid_width)


# --------------------------------------------------------------------------- per frame


def _buffers(state: ComposeState, h: int, w: int) -> dict:
    """Per-frame-shape buffers and index tables; rebuilt only when the frame shape changes."""
    buf = state.buffers.get((h, w))
    if buf is None:
        state.buffers.clear()
        hs, ws = working_size(h, w)
        k = _grid_factor(w)
        H, W = hs * k, ws * k  # noqa: N806  (padded full resolution)
        buf = state.buffers[(h, w)] = {
            "out": np.empty((h, w, 3), np.uint8),
            "alpha8": np.empty((h, w), np.uint8),
            "zeros": np.zeros((h, w), np.uint8),
            "ones": np.full((h, w), 255, np.uint8),
            "small": np.empty((hs, ws, 3), np.uint8),
            "k": k,
            "padded": (H, W) != (h, w),
            "out_p": np.empty((H, W, 3), np.uint8),
            "alpha_p": np.empty((H, W), np.uint8),
            "cls": np.empty((3, hs, ws), np.uint8),  # person, unsure, some person (0/1)
            "sure": np.empty((hs, ws), np.bool_),
        }
    return buf


def _fail_closed(state: ComposeState, frame: np.ndarray, buf: dict) -> Rendered:
    """Hide everything. With a replacement background that is the background itself (the user
    chose what the call should see, and it reveals nothing); otherwise a very strong blur, so the
    picture still shows that the camera is live."""
    h, w = frame.shape[:2]
    if state.background is not None:
        np.copyto(buf["out"], state.background.frame_for(h, w))
    else:
        fail_closed_image(frame, dst=buf["out"], cache=buf)
    return Rendered(image=buf["out"], alpha=buf["zeros"], fail_closed=True)


def downscale_by(frame: np.ndarray, k: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Box-average ``frame`` (size a multiple of k) down by the integer factor ``k``.

    Why halvings: an exact 2x INTER_LINEAR downscale is a 2x2 box average and several times
    cheaper than INTER_AREA on a full frame; INTER_AREA finishes any odd factor that is left.
    """
    h, w = frame.shape[:2]
    img = frame
    while k % 2 == 0 and k > 1:
        k //= 2
        h, w = h // 2, w // 2
        last = k == 1
        img = cv2.resize(img, (w, h), dst=dst if last else None, interpolation=cv2.INTER_LINEAR)
    if k > 1:
        img = cv2.resize(img, (w // k, h // k), dst=dst, interpolation=cv2.INTER_AREA)
    elif img is frame:
        img = frame.copy() if dst is None else (np.copyto(dst, frame) or dst)
    return img


def _guide_small(frame: np.ndarray, k: int, dst: np.ndarray) -> np.ndarray:
    """The frame on the mask grid, as the guided filter's guide.

    For k = 4 (640 px wide) one compiled pass, the 4x4 mean rounded once (``kernels.
    box_down4``: ~0.07 ms less than two halvings, within a level of them).

    For k >= 8 (1280 px wide and up) the first 4x step is one ``INTER_LINEAR`` resize: it
    averages the central 2x2 pixels of every 4x4 block (reading half the rows), so a grid cell
    is the mean of 16 of its 64 pixels on a regular lattice instead of all 64 (~0.5 ms less at
    720p). The guide's statistics are box means over 7x7 cells of that, and the coefficients
    are applied to every pixel's own colour: measured the same quality (docs/compositing.md).
    """
    if k == 4 and frame.flags.c_contiguous:
        kernels.box_down4(frame, dst)
        return dst
    if k < 8 or k % 4:
        return downscale_by(frame, k, dst=dst)
    h, w = frame.shape[:2]
    quarter = cv2.resize(frame, (w // 4, h // 4), interpolation=cv2.INTER_LINEAR)
    return downscale_by(quarter, k // 4, dst=dst)


def _guide_into(frame_p: np.ndarray, guide: np.ndarray | None, buf: dict) -> np.ndarray:
    """THIS frame on the mask grid, into ``buf["small"]``: the caller's ``guide`` when it is the
    frame box-averaged to the grid already, else made here (``_guide_small``).

    Why take it from the caller: the motion compensator makes the same picture every frame (its
    flow resolution is the grid at 640x360 and 1280x720: the frame box-averaged by 4 and 8,
    ``motion._small``; at 640x360 by the same pass as ``_guide_small``), so making it twice was
    ~0.15 ms a frame at 640x360 and ~0.5 ms at 1280x720. Its shape tells: a picture of the
    grid's shape from power-of-two box means of an unpadded frame is the k x k box mean (k =
    2^n: for any other k the widths differ, at any width up to 16,000 px).
    """
    small = buf["small"]
    usable = guide is not None and guide.shape == small.shape and guide.dtype == small.dtype
    if usable and not buf["padded"]:
        np.copyto(small, guide)
    else:
        _guide_small(frame_p, buf["k"], small)
    return small


def _box_cells(x: np.ndarray, radius: int, dst: np.ndarray) -> np.ndarray:
    """Box mean over (2r+1)^2 cells of every channel of an interleaved (h, w, n) float32 grid,
    borders reflected (``cv2.BORDER_REFLECT``). ``sepFilter2D`` with a 1/k kernel: ~2x faster
    than ``boxFilter`` on float (whose column sums run in double), same result to 1e-7."""
    k = 2 * radius + 1
    kernel = np.full((k, 1), 1.0 / k, np.float32)
    return cv2.sepFilter2D(x, -1, kernel, kernel, dst=dst, borderType=cv2.BORDER_REFLECT)


def _gf_scratch(s: dict, h: int, w: int) -> tuple:
    if s.get("gf_shape") != (h, w):
        s["gf_shape"] = (h, w)
        s["gf_stats"] = np.empty(h * w * 13, np.float32)
        s["gf_means"] = np.empty(h * w * 13, np.float32)
        s["gf_ab"] = np.empty(h * w * 4, np.float32)
        s["gf_crop"] = np.empty(h * w * 4, np.float32)
        s["gf_coef"] = np.empty((h, w, 4), np.float32)
    return s["gf_stats"], s["gf_means"], s["gf_ab"], s["gf_crop"], s["gf_coef"]


def _cells(flat: np.ndarray, h: int, w: int, n: int) -> np.ndarray:
    """A contiguous (h, w, n) view at the start of a flat scratch buffer (a crop of any size)."""
    return flat[: h * w * n].reshape(h, w, n)


def _guided_coefficients(small: np.ndarray, prob: np.ndarray, r: int, buf: dict) -> np.ndarray:
    """The colour guided filter's box-averaged coefficients (hs, ws, 4) = (A_b, A_g, A_r, b) of
    ``prob`` with the guide ``small``, computed only on the crop of the grid where they can
    differ from the flat fit (A = 0, b = p), which fills the rest.

    Why exact: outside the box of cells where p is fractional or steps (``kernels.
    active_box``) p is one constant, 0 or 1, on each side of it. The filter reads (2r+1)^2
    windows twice: the fit (A, b) of a cell is not flat only within r of the box, its
    box-averaged coefficients only within 2r, so the crop is the box grown by 2r. At the
    crop's inner edges OpenCV reflects the crop instead of reading on, but what it reflects
    there is flat ground of the same constant (statistics more than r from the box, fits more
    than r from it), which is what lies beyond. Why bother: the room is exactly 0 and the
    person often fills only a part of the picture, so the crop is 34-72 % of the grid on the
    shared sitting and juggling clips (85-100 % where the person fills the frame: akiyo,
    carphone), and these four passes are most of the per-frame grid work.
    """
    hs, ws = prob.shape
    st, means, ab, crop, coef = _gf_scratch(buf, hs, ws)
    y0, y1, x0, x1 = kernels.active_box(prob, 2 * r)
    ch, cw = y1 - y0, x1 - x0
    crop_c = _cells(crop, ch, cw, 4)
    if ch and cw:
        st_c = _cells(st, ch, cw, 13)
        kernels.gf_stats(small, prob, y0, x0, st_c)
        means_c = _box_cells(st_c, r, _cells(means, ch, cw, 13))
        ab_c = _cells(ab, ch, cw, 4)
        kernels.gf_solve(means_c, ab_c, GF_EPS)
        _box_cells(ab_c, r, crop_c)
    kernels.flat_outside(prob, crop_c, y0, x0, coef)
    return coef


def gf_radius(grid_w: int, model_w: int) -> int:
    """Guided-filter radius on the grid: GF_RADIUS_CELLS model cells, at least 1 grid px."""
    return max(1, round(GF_RADIUS_CELLS * grid_w / model_w))


def _fit_radius(radius: int, h: int, w: int) -> int:
    """The radius clamped so the reflected borders fit inside a tiny grid."""
    return max(1, min(radius, (min(h, w) - 1) // 2))


class Grid(NamedTuple):
    """What the per-frame refinement knows on the mask grid (all views into reused buffers)."""

    coef: np.ndarray  # (hs, ws, 4) float32: guided filter A (B, G, R) and b, box-averaged
    person: np.ndarray  # uint8 0/1: filtered probability >= 0.5
    band: np.ndarray  # uint8, nonzero: cells where the edge can be (per-pixel work there)
    some_person: np.ndarray  # uint8 0/1: may hold person pixels (kept out of the background)


def _grid_refine(prob: np.ndarray, model_w: int, buf: dict) -> Grid:
    """Colour guided filter of the grid probability with THIS frame (``buf["small"]``: the frame
    on the grid, made by ``_guide_into``), on the grid.

    Returns the box-averaged coefficients, the grid's person class, the band cells (a class
    change nearby, or a value a pixel's own colour can move across the output smoothstep) and
    the cells that may hold any person pixel (filtered value >= OUT_LOW).
    The elementwise algebra runs in compiled loops (``kernels``), the box means in OpenCV.
    """
    small = buf["small"]
    hs, ws = prob.shape
    r = _fit_radius(gf_radius(ws, model_w), hs, ws)
    coef = _guided_coefficients(small, np.ascontiguousarray(prob, np.float32), r, buf)
    person, unsure, some_person = buf["cls"]
    kernels.grid_classes(coef, small, BAND_MARGIN, OUT_LOW, person, unsure, some_person)
    # Band: cells on either side of a class change (3x3 morphological gradient), and cells whose
    # value is not clearly 0 or 1 (a pixel's own colour can move it across the smoothstep).
    kern = np.ones((3, 3), np.uint8)
    band = cv2.morphologyEx(person, cv2.MORPH_GRADIENT, kern)
    band |= unsure
    if BAND_DILATE:
        band = cv2.dilate(band, kern)
    return Grid(coef=coef, person=person, band=band, some_person=some_person)


def _nearest_up(cells: np.ndarray, k: int, dst: np.ndarray) -> None:
    """uint8 grid -> every cell as a k x k block of ``dst`` (nearest-neighbour upsampling by k).

    For k = 2, 4, 8 a cell's k bytes are one 16/32/64-bit word (value x 0x0101...): one
    broadcast copy of words, ~20x faster than ``cv2.resize(INTER_NEAREST)``.
    """
    hs, ws = cells.shape
    word = {2: np.uint16, 4: np.uint32, 8: np.uint64}.get(k)
    if word is None:
        dst.reshape(hs, k, ws, k)[:] = cells[:, None, :, None]
        return
    spread = cells.astype(word) * word(int("01" * k, 16))
    dst.view(word).reshape(hs, k, ws)[:] = spread[:, None, :]


def _paint(
    frame_p: np.ndarray, out_p: np.ndarray, alpha_p: np.ndarray, grid: Grid, buf: dict
) -> None:
    """Full resolution: ``out_p`` holds the background; paste the person, blend the band.

    Outside the band every pixel takes its cell's class (255: the frame, 0: the background): no
    float pass over the full frame. In the band (``kernels.paint_band``) the coefficients are
    bilinearly interpolated per pixel, exactly as ``cv2.resize`` would, applied to the pixel's
    own colour, and the pixel blended with the background, in one compiled loop over the band
    cells only.
    """
    person, band, coef = grid.person, grid.band, grid.coef
    k = buf["k"]
    sure = buf["sure"]
    np.greater(person, band, out=sure)  # person cells outside the band: the frame itself
    _nearest_up(sure.view(np.uint8) * np.uint8(255), k, alpha_p)
    cv2.copyTo(frame_p, alpha_p, out_p)
    kernels.paint_band(frame_p, out_p, alpha_p, coef, band, k, OUT_LOW, OUT_HIGH)


def _background_into(
    state: ComposeState,
    frame_p: np.ndarray,
    some_person: np.ndarray,
    small: np.ndarray,
    dst: np.ndarray,
    buf: dict,
) -> np.ndarray:
    """The hiding background at dst's size: replacement, or halo-free blur at low resolution.

    ``some_person``: grid cells (uint8, nonzero) that may hold person pixels; they and their 8
    neighbours (a cell is k frame px wide, the edge can sit anywhere in it) get weight 0. The
    blur runs f = ``blur_factor`` times below the grid, on ceil(grid / f) cells (the last ones
    partial); upsampling those to the frame shifts the blurred picture by under half a cell at
    the far edges, which nothing can see in a blur that wide (and no person pixel is in it).
    """
    H, W = dst.shape[:2]  # noqa: N806
    hs, ws = small.shape[:2]
    sigma = blur_sigma(hs, ws, state.settings.blur)
    if state.background is not None:
        bg = state.background.frame_for(*frame_p.shape[:2])
        np.copyto(dst, bg)
    elif sigma <= 0:
        np.copyto(dst, frame_p)  # --blur 0: nothing to hide the background with; keep it sharp
    else:
        f = blur_factor(sigma)
        bh, bw = -(-hs // f), -(-ws // f)
        kern = np.ones((3, 3), np.uint8)
        # 1: background. numpy, not cv2.compare: OpenCV takes a 1x1 array next to the scalar 0
        # for a scalar too and refuses the pair (a 1x1 frame crashed the compositor)
        keep = (cv2.dilate(some_person, kern) == 0).view(np.uint8)
        stack, image = np.empty((bh, bw, 4), np.float32), np.empty((bh, bw, 3), np.float32)
        kernels.premultiplied_down(small, keep, f, stack, image)
        bg_small = _normalised_blur(stack, image, sigma / f)
        _upsample_into(bg_small, dst, buf)
    return dst


def _linear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel of an axis: the first of the two source pixels ``cv2.resize(INTER_LINEAR)``
    blends and the second one's weight in 1/256 (pixel centres aligned, edges clamped)."""
    first, frac = kernels.linear_positions(n_out, n_in)
    return first.astype(np.int32), np.rint(frac * 256.0).astype(np.int32)


def _upsample_into(small: np.ndarray, dst: np.ndarray, cache: dict) -> None:
    """Bilinear enlargement of the blurred background (uint8 (h, w, 3), a few dozen cells a
    side) to ``dst`` (contiguous), sampled as ``cv2.resize(INTER_LINEAR)`` samples, within 2
    levels of it (two roundings; 1 on a blurred picture).

    Two passes of ``kernels.lerp_rows``: the transposed picture's rows to the frame's width (so
    the horizontal pass is a row pass too), transposed back, then its rows to the frame's
    height. Taps and buffers are kept in ``cache`` (the frame shape's buffers) per pair of
    sizes."""
    (h, w), (H, W) = small.shape[:2], dst.shape[:2]  # noqa: N806
    if not dst.flags.c_contiguous:  # reshaping it would copy, and the copy would get the rows
        cv2.resize(small, (W, H), dst=dst, interpolation=cv2.INTER_LINEAR)
        return
    key = ("upsample", h, w, H, W)
    if key not in cache:
        cache[key] = (
            _linear_taps(W, w),
            _linear_taps(H, h),
            np.empty((w, h, 3), np.uint8),
            np.empty((W, h, 3), np.uint8),
            np.empty((h, W, 3), np.uint8),
        )
    across, down, small_t, wide_t, wide = cache[key]
    cv2.transpose(small, small_t)
    kernels.lerp_rows(small_t.reshape(w, h * 3), *across, wide_t.reshape(W, h * 3))
    cv2.transpose(wide_t, wide)
    kernels.lerp_rows(wide.reshape(h, W * 3), *down, dst.reshape(H, W * 3))


def render(
    state: ComposeState,
    frame: np.ndarray,
    *,
    privacy: bool,
    mask_ok: bool,
    alpha: np.ndarray | None = None,
    guide: np.ndarray | None = None,
) -> Rendered:
    """Composite one camera frame with the latest accepted mask.

    ``alpha``: replaces ``state.mask.alpha`` for this frame only (e.g. a motion-compensated copy:
    same shape, float32 0..1; its resolution is the one ``accept_mask`` documents); the
    refinement runs from it. ``guide``: this frame box-averaged to the mask grid, if the caller
    has it (``motion.Tracked.picture``); used only when it has the grid's shape (``_guide_into``).
    Fails closed (everything hidden, alpha 0) when privacy is on but
    there is no usable mask: none accepted yet, ``mask_ok`` False (e.g. the mask is stale) or a
    mask whose aspect ratio does not match the frame (it belongs to another camera mode).
    """
    h, w = frame.shape[:2]
    buf = _buffers(state, h, w)
    if not privacy:
        return Rendered(image=frame, alpha=buf["ones"], fail_closed=False)
    m = state.mask
    if not mask_ok or m is None or not same_aspect(m.frame_shape, (h, w)):
        return _fail_closed(state, frame, buf)
    prob = m.alpha if alpha is None else alpha
    if not same_aspect(prob.shape[:2], (h, w)):
        return _fail_closed(state, frame, buf)
    hs, ws = working_size(h, w)

    if not state.settings.refine or min(hs, ws) < 3:  # raw: bilinear upsampling only
        # (also for frames too small for a guided filter on the grid: a few pixels)
        raw = prob if prob.shape == (h, w) else cv2.resize(prob, (w, h))
        np.copyto(buf["alpha8"], np.clip(raw * 255.0 + 0.5, 0, 255).astype(np.uint8))
        small = downscale(frame, hs, ws, dst=buf["small"])
        alpha_small = cv2.resize(prob, (ws, hs), interpolation=cv2.INTER_AREA)
        some_person = (alpha_small >= 0.5).view(np.uint8)  # the old weight 1 - 2a was 0 there
        if state.background is not None:
            background = state.background.frame_for(h, w)
        else:
            background = _background_into(state, frame, some_person, small, buf["out"], buf).copy()
        blend(frame, background, buf["alpha8"], out=buf["out"], scratch=buf)
        return Rendered(image=buf["out"], alpha=buf["alpha8"], fail_closed=False)

    if prob.shape != (hs, ws):  # a mask grid of another frame size with the same aspect
        prob = cv2.resize(prob, (ws, hs), interpolation=cv2.INTER_LINEAR)
    padded = buf["padded"]
    frame_p = _padded(frame, *buf["out_p"].shape[:2]) if padded else np.ascontiguousarray(frame)
    out_p = buf["out_p"] if padded else buf["out"]
    alpha_p = buf["alpha_p"] if padded else buf["alpha8"]
    _guide_into(frame_p, guide, buf)
    grid = _grid_refine(prob, m.grid_width, buf)
    _background_into(state, frame_p, grid.some_person, buf["small"], out_p, buf)
    _paint(frame_p, out_p, alpha_p, grid, buf)
    if padded:
        np.copyto(buf["out"], out_p[:h, :w])
        np.copyto(buf["alpha8"], alpha_p[:h, :w])
    return Rendered(image=buf["out"], alpha=buf["alpha8"], fail_closed=False)

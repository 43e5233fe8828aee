"""Compositing: turn a soft person mask and a camera frame into the privacy-mode picture.

What the tutorial did and why we don't: it pasted a binary Mask R-CNN mask over a full-resolution
``GaussianBlur(frame, (41, 41))``. The hard edge looks cut out, the blur mixes the person's colours
into the background right next to them (a halo that also reveals the silhouette), and the 41x41
blur is the most expensive thing per frame. Here instead:

* per mask (``accept_mask``, 1-30 times/s): threshold band around the model's decision boundary,
  small dilation (hair, shoulders) and feathering, and temporal smoothing only where the model is
  uncertain, all at a ~320 px wide working resolution;
* per frame (``render``, camera rate): a fast guided filter (He et al.) whose coefficients are
  computed at the working resolution and applied with THIS frame's full-resolution luma, so the
  alpha snaps to real image edges; a mask-weighted, normalised blur at working resolution (no person
  colour in the background); a uint8 alpha blend at full resolution.

Every building block is a pure function; ``ComposeState`` only holds the latest mask, the opened
background and buffers reused between frames (keyed by frame shape).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.errors import FatalError
from compositor.background import (  # noqa: F401  (fit_background: part of the compose API)
    Background,
    ColorBackground,
    fit_background,
    open_background,
)

# Working resolution for everything that need not be full resolution (mask, guided-filter
# coefficients, background blur). ~320 px wide is above the selfie model's 256 px output, so no
# mask detail is lost, and an integer downscale factor keeps cv2.INTER_AREA on its fast path.
WORK_WIDTH = 320
# Tutorial look: GaussianBlur ksize 41 -> sigma 0.3*((41-1)/2-1)+0.8 = 6.5 px on a 600 px frame.
TUTORIAL_SIGMA_AT_600 = 6.5
# The constants below were tuned on gt_images + DAVIS hike with the selfie model (grid search,
# see docs/compositing.md); the two sets disagree on where the edge should sit (photos want a
# larger person, DAVIS a smaller one), these values improve both over the raw mask.
# Threshold band on the model probability (127 ~ decision boundary): below LOW = background,
# above HIGH = person, smoothstep in between.
BAND_LOW = 0.4
BAND_HIGH = 0.6
# Dilation in working px. 0: one working px is 2-6 frame px, too coarse a step; it helped the
# photos but cost DAVIS more (IoU -0.02), so the edge position is set by the bands instead.
DILATE_PX = 0
FEATHER_SIGMA = 1.0  # working-resolution px, before the guided filter
# Guided filter at working resolution (radius in working px; eps relative to luma in [0, 1]).
GF_RADIUS = 4
GF_EPS = 1e-2
# Final contrast on the guided-filter output: the filter leaves a soft ramp; this narrows it to
# a few px, centred slightly on the background side (0.4) so thin edges are kept.
OUT_LOW = 0.25
OUT_HIGH = 0.55
# Temporal smoothing: weight of the previous mask where the new one is exactly 0.5.
TEMPORAL_KEEP = 0.85
# Fail-closed blur: sigma as a fraction of the working width (1/10: only colour blobs remain).
FAIL_CLOSED_SIGMA_FRACTION = 0.1
# Aspect-ratio tolerance between a mask and the frame it is applied to (rounding of sizes).
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class ComposeSettings:
    """User-facing compositing options (the compositor's command line)."""

    blur: float = 1.0  # strength multiplier; 1.0 = tutorial's kernel 41 at 600 px, scaled to width
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
    # float32 0..1, temporally smoothed: working-res soft alpha (refine) or mask-res raw probability
    alpha: np.ndarray


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
    """(h, w) of the working resolution for a frame: an integer downscale to ~WORK_WIDTH."""
    factor = max(1, round(width / WORK_WIDTH))
    return max(1, round(height / factor)), max(1, round(width / factor))


def blur_sigma(width: int, strength: float) -> float:
    """Background blur sigma in px at ``width``: the tutorial's look, scaled with the frame."""
    return TUTORIAL_SIGMA_AT_600 * width / 600.0 * strength


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
    guide: np.ndarray, src: np.ndarray, radius: int = GF_RADIUS, eps: float = GF_EPS
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
    guide: np.ndarray, src: np.ndarray, radius: int = GF_RADIUS, eps: float = GF_EPS
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
    img = image.astype(np.float32)
    wgt = cv2.max(cv2.subtract(1.0, cv2.multiply(alpha.astype(np.float32), 2.0)), 0.0)
    wgt = cv2.min(wgt, 1.0)
    weighted = cv2.multiply(img, cv2.merge([wgt, wgt, wgt]))
    stack = cv2.GaussianBlur(cv2.merge([weighted, wgt]), (0, 0), sigma)  # one pass for both
    eps = 1e-3
    num = cv2.scaleAdd(img, eps, np.ascontiguousarray(stack[..., :3]))
    den = cv2.add(np.ascontiguousarray(stack[..., 3]), eps)
    out = cv2.divide(num, cv2.merge([den, den, den]))
    return cv2.convertScaleAbs(out)  # out >= 0; rounds and saturates


def blur_factor(sigma: float) -> int:
    """Extra downscale for the background blur so that sigma stays >= ~1.5 px there.

    Why: a Gaussian that wide has no detail a lower resolution could lose, and blurring (and
    weighting) a few thousand pixels instead of ~60k makes the blur nearly free.
    """
    return max(1, int(sigma / 1.5))


def downscale(frame: np.ndarray, height: int, width: int, dst: np.ndarray | None = None):
    """Box-filtered downscale to (height, width).

    Why two steps: an exact 2x INTER_LINEAR downscale is a 2x2 box average and ~5x cheaper than
    INTER_AREA on the full frame; INTER_AREA then finishes on a quarter of the pixels.
    """
    fh, fw = frame.shape[:2]
    if fw >= 4 * width and fh >= 4 * height:
        half = cv2.resize(frame, (fw // 2, fh // 2), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(half, (width, height), dst=dst, interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, (width, height), dst=dst, interpolation=cv2.INTER_AREA)


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


def fail_closed_image(frame: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """The whole frame blurred so strongly that only colour blobs remain (nothing recognisable).

    Done at 1/20 of the width (the blur is so wide that nothing is lost by that), so it costs
    well under a millisecond: fail-closed frames must never lower the frame rate.
    """
    h, w = frame.shape[:2]
    ws = max(8, w // 20)
    hs = max(4, round(h * ws / w))
    tiny = cv2.resize(frame, (ws, hs), interpolation=cv2.INTER_AREA)
    tiny = cv2.GaussianBlur(tiny, (0, 0), FAIL_CLOSED_SIGMA_FRACTION * ws)
    return cv2.resize(tiny, (w, h), dst=dst, interpolation=cv2.INTER_LINEAR)


def tutorial_composite(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The tutorial's method, kept as the baseline for tests and benchmarks.

    Full-resolution GaussianBlur (41, 41) and a binary paste of the person (mask >= 128). The
    paste uses cv2.copyTo, the fastest way to do it (numpy boolean indexing, as in the tutorial,
    is several ms slower at 720p), so speed comparisons do not flatter our method.
    """
    out = cv2.GaussianBlur(frame, (41, 41), 0)
    cv2.copyTo(frame, (mask >= 128).view(np.uint8), out)
    return out


# --------------------------------------------------------------------------- per mask


def accept_mask(
    state: ComposeState, mask: np.ndarray, guide: np.ndarray | None, *, continuous: bool
) -> None:
    """Take a new person mask (uint8 0..255, any size) and do all per-mask work.

    ``guide`` is the frame the mask was computed on; only its size is used here (the mask is
    applied to later frames, so the edge refinement uses the frame being rendered instead).
    ``continuous=False`` (unrelated stills) disables temporal smoothing for this mask.
    """
    if mask.ndim == 3:
        mask = mask[..., 0]
    fh, fw = guide.shape[:2] if guide is not None else mask.shape[:2]
    settings = state.settings
    if settings.refine:
        hs, ws = working_size(fh, fw)
        if mask.shape != (hs, ws):
            interp = cv2.INTER_AREA if mask.shape[1] > ws else cv2.INTER_LINEAR
            small = cv2.resize(mask, (ws, hs), interpolation=interp)
        else:
            small = mask
        prob = small.astype(np.float32) * (1.0 / 255.0)
    else:
        prob = mask.astype(np.float32) * (1.0 / 255.0)
    alpha = (
        soft_alpha(prob, BAND_LOW, BAND_HIGH, DILATE_PX, FEATHER_SIGMA) if settings.refine else prob
    )
    prev = state.mask
    if settings.temporal and continuous and prev is not None and prev.alpha.shape == alpha.shape:
        alpha = temporal_smooth(prev.alpha, alpha, prob, TEMPORAL_KEEP)
    state.mask = MaskState(frame_shape=(fh, fw), alpha=alpha)


# --------------------------------------------------------------------------- per frame


def _buffers(state: ComposeState, h: int, w: int) -> dict[str, np.ndarray]:
    """Per-frame-shape buffers; reallocated only when the frame shape changes."""
    buf = state.buffers.get((h, w))
    if buf is None:
        state.buffers.clear()
        hs, ws = working_size(h, w)
        buf = state.buffers[(h, w)] = {
            "out": np.empty((h, w, 3), np.uint8),
            "alpha8": np.empty((h, w), np.uint8),
            "zeros": np.zeros((h, w), np.uint8),
            "ones": np.full((h, w), 255, np.uint8),
            "small": np.empty((hs, ws, 3), np.uint8),
            "gray": np.empty((h, w), np.uint8),
            "a_up": np.empty((h, w), np.float32),
            "b_up": np.empty((h, w), np.float32),
            "q": np.empty((h, w), np.float32),
            "bg": np.empty((h, w, 3), np.uint8),
        }
    return buf


def _aspect_matches(a: tuple[int, int], b: tuple[int, int]) -> bool:
    ra, rb = a[1] / a[0], b[1] / b[0]
    return abs(ra - rb) <= ASPECT_TOLERANCE * rb


def _fail_closed(state: ComposeState, frame: np.ndarray, buf: dict) -> Rendered:
    """Hide everything. With a replacement background that is the background itself (the user
    chose what the call should see, and it reveals nothing); otherwise a very strong blur, so the
    picture still shows that the camera is live."""
    h, w = frame.shape[:2]
    if state.background is not None:
        np.copyto(buf["out"], state.background.frame_for(h, w))
    else:
        fail_closed_image(frame, dst=buf["out"])
    return Rendered(image=buf["out"], alpha=buf["zeros"], fail_closed=True)


def _refined_alpha(alpha_small: np.ndarray, frame: np.ndarray, buf: dict) -> np.ndarray:
    """Fast guided filter: coefficients at working res from THIS frame, applied at full res.

    Returns the working-resolution refined alpha (for the background blur); the full-resolution
    uint8 alpha is written to ``buf["alpha8"]``.
    """
    h, w = frame.shape[:2]
    small = buf["small"]
    downscale(frame, small.shape[0], small.shape[1], dst=small)
    guide_small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) * (1.0 / 255.0)
    a, b = guided_filter_coefficients(guide_small, alpha_small, GF_RADIUS, GF_EPS)
    # Fold the output contrast band and the 0..255 scale into (a, b): the full-resolution work is
    # then one multiply-add on the uint8 luma.
    d = OUT_HIGH - OUT_LOW
    refined_small = np.clip((a * guide_small + b - OUT_LOW) / d, 0.0, 1.0)
    a_full = a * (1.0 / d)  # per unit of luma/255 ... times 255 for alpha in 0..255, / 255 luma
    b_full = (b - OUT_LOW) * (255.0 / d)
    cv2.resize(a_full, (w, h), dst=buf["a_up"], interpolation=cv2.INTER_LINEAR)
    cv2.resize(b_full, (w, h), dst=buf["b_up"], interpolation=cv2.INTER_LINEAR)
    cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY, dst=buf["gray"])
    q = buf["q"]
    cv2.multiply(buf["a_up"], buf["gray"], dst=q, dtype=cv2.CV_32F)
    cv2.add(q, buf["b_up"], dst=buf["alpha8"], dtype=cv2.CV_8U)  # rounds and saturates 0..255
    return refined_small


def render(state: ComposeState, frame: np.ndarray, *, privacy: bool, mask_ok: bool) -> Rendered:
    """Composite one camera frame with the latest accepted mask.

    Fails closed (everything hidden, alpha 0) when privacy is on but there is no usable mask:
    none accepted yet, ``mask_ok`` False (e.g. the mask is stale) or a mask whose aspect ratio
    does not match the frame (it belongs to another camera mode).
    """
    h, w = frame.shape[:2]
    buf = _buffers(state, h, w)
    if not privacy:
        return Rendered(image=frame, alpha=buf["ones"], fail_closed=False)
    m = state.mask
    if not mask_ok or m is None or not _aspect_matches(m.frame_shape, (h, w)):
        return _fail_closed(state, frame, buf)

    settings = state.settings
    hs, ws = working_size(h, w)
    if settings.refine:
        alpha_small = m.alpha
        if alpha_small.shape != (hs, ws):
            alpha_small = cv2.resize(alpha_small, (ws, hs), interpolation=cv2.INTER_LINEAR)
        refined_small = _refined_alpha(alpha_small, frame, buf)
    else:
        raw = m.alpha if m.alpha.shape == (h, w) else cv2.resize(m.alpha, (w, h))
        np.copyto(buf["alpha8"], np.clip(raw * 255.0 + 0.5, 0, 255).astype(np.uint8))
        refined_small = cv2.resize(m.alpha, (ws, hs), interpolation=cv2.INTER_AREA)
        downscale(frame, hs, ws, dst=buf["small"])
    alpha8 = buf["alpha8"]

    sigma = blur_sigma(ws, settings.blur)
    if state.background is not None:
        background = state.background.frame_for(h, w)
    elif sigma <= 0:
        background = frame  # --blur 0: nothing to hide the background with; keep it sharp
    else:
        f = blur_factor(sigma)
        bh, bw = max(1, round(hs / f)), max(1, round(ws / f))
        small, alpha_b = buf["small"], refined_small
        if f > 1:
            small = cv2.resize(small, (bw, bh), interpolation=cv2.INTER_AREA)
            alpha_b = cv2.resize(refined_small, (bw, bh), interpolation=cv2.INTER_AREA)
        bg_small = halo_free_blur(small, alpha_b, sigma * bw / ws)
        background = cv2.resize(bg_small, (w, h), dst=buf["bg"], interpolation=cv2.INTER_LINEAR)
    blend(frame, background, alpha8, out=buf["out"], scratch=buf)
    return Rendered(image=buf["out"], alpha=alpha8, fail_closed=False)

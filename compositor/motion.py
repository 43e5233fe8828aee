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
* per frame (``track``): extend the map by this frame's flow, warp the mask's alpha through it
  once (the alpha is resampled once, not once per frame, so it does not blur over time), then the
  privacy rule: where the warped alpha calls a pixel person but the picture there does not match
  the mask frame seen through the same map (photometric residual above what camera noise makes),
  the motion does not explain the change (the room uncovered behind a moving person, someone
  gone): those pixels are hidden (alpha 0) until a fresh mask says otherwise.

Pure numpy/OpenCV, no threads, no I/O; every buffer is reused per frame size.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


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


@dataclass
class Tracked:
    alpha: np.ndarray  # same shape/dtype as the alpha given to new_mask, carried to this frame
    hidden_share: float  # share of the frame hidden by the change rule (0..1)
    ms: float  # compensation cost for this frame: observe + track (+ new_mask if one came)


@dataclass
class _Entry:
    frame_id: int
    grey: np.ndarray  # uint8, flow resolution
    back: np.ndarray | None  # float16 HxWx2: this frame -> previous observed frame


def _identity(h: int, w: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.dstack([xs, ys])


class MotionCompensator:
    """Carries the newest mask to every shown frame. See the module docstring."""

    def __init__(
        self,
        settings: MotionSettings = MotionSettings(),  # noqa: B008 (frozen, immutable)
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.settings = settings
        self.clock = clock
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._dis.setFinestScale(settings.dis_finest_scale)
        self._dis_ref = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._dis_ref.setFinestScale(settings.dis_finest_scale)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything: the stream changed (new source, new frame size)."""
        self._shape: tuple[int, int] | None = None  # (h, w) of the frames
        self._halvings = 0
        self._history: deque[_Entry] = deque(maxlen=max(2, self.settings.history_frames))
        self._ident: np.ndarray | None = None
        self._noise = 0.0  # robust sigma of the frame-to-frame residual (grey levels)
        self._observe_ms = 0.0
        self._mask_ms = 0.0  # new_mask's cost, reported with the next track()
        self._frames_seen = 0
        # the active mask
        self._alpha: np.ndarray | None = None
        self._mask_grey: np.ndarray | None = None  # mask frame at flow res, blurred (float32)
        self._mask_grey8: np.ndarray | None = None  # the same, uint8 unblurred (for DIS)
        self._cum: np.ndarray | None = None  # flow res HxWx2: current pixel -> mask frame coords
        self._cum_id: int | None = None  # frame the map is up to date for
        self._buf: dict[str, np.ndarray] = {}

    @property
    def history_len(self) -> int:
        return len(self._history)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the history (bounded by ``history_frames``)."""
        n = 0
        for e in self._history:
            n += e.grey.nbytes + (e.back.nbytes if e.back is not None else 0)
        return n

    # ------------------------------------------------------------------ helpers

    def _small_grey(self, frame: np.ndarray) -> np.ndarray:
        """Frame -> grey at flow resolution by exact halvings (each a 2x2 box average)."""
        img = frame
        n = self._halvings
        if n > 0:
            h, w = img.shape[:2]
            img = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
            n -= 1
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
        while n > 0:
            h, w = grey.shape[:2]
            grey = cv2.resize(grey, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
            n -= 1
        return grey

    def _blurred(self, grey: np.ndarray) -> np.ndarray:
        s = self.settings.residual_blur
        g = grey.astype(np.float32)
        return cv2.GaussianBlur(g, (0, 0), s) if s > 0 else g

    def _setup(self, shape: tuple[int, int]) -> None:
        self.reset()
        self._shape = shape
        h, w = shape
        n = 0
        while w / 2 ** (n + 1) >= self.settings.flow_width * 0.75 and h / 2 ** (n + 1) >= 16:
            n += 1
        self._halvings = n

    def _flow(self, to_grey: np.ndarray, from_grey: np.ndarray) -> np.ndarray:
        """Flow such that from_grey(x) ~ to_grey(x + flow(x))."""
        return self._dis.calc(from_grey, to_grey, None)

    def _measure_noise(self, prev: np.ndarray, grey: np.ndarray, flow: np.ndarray) -> None:
        """Robust sigma (1.4826 x median absolute residual) of this frame vs the previous one
        seen through the flow, on the same blurred pictures the change rule compares; kept as a
        slow running mean (camera gain changes slowly, single frames with motion are outliers
        the median already ignores)."""
        warped = cv2.remap(
            self._blurred(prev),
            self._ident + flow,
            None,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        sigma = 1.4826 * float(np.median(cv2.absdiff(self._blurred(grey), warped)))
        self._noise = sigma if self._noise == 0.0 else 0.8 * self._noise + 0.2 * sigma

    def _advance(self, back: np.ndarray) -> None:
        """Extend the current->mask-frame map by one frame: cum'(x) = cum(x + back(x))."""
        m = self._ident + back.astype(np.float32, copy=False)
        self._cum = cv2.remap(self._cum, m, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _refine(self, grey: np.ndarray) -> None:
        """Refine the map by a direct flow current -> mask frame, initialised with the map."""
        if not self.settings.refine_direct or self._mask_grey8 is None:
            return
        init = np.ascontiguousarray(self._cum - self._ident)
        self._cum = self._ident + self._dis_ref.calc(grey, self._mask_grey8, init)

    # ------------------------------------------------------------------ interface

    def observe(self, frame_id: int, frame: np.ndarray) -> None:
        """Every frame the compositor receives, in order (BGR uint8, full size)."""
        t0 = self.clock()
        shape = frame.shape[:2]
        if shape != self._shape:
            self._setup(shape)
        grey = self._small_grey(frame)
        if self._ident is None:
            self._ident = _identity(*grey.shape)
        back = None
        if self._history:
            prev = self._history[-1]
            flow = self._flow(prev.grey, grey)
            back = flow.astype(np.float16)
            self._frames_seen += 1
            if self._frames_seen % self.settings.noise_every == 1:
                self._measure_noise(prev.grey, grey, flow)
            if self._cum is not None and self._cum_id == prev.frame_id:
                self._advance(flow)
                self._refine(grey)
                self._cum_id = frame_id
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
        if self._shape is None or mask_frame.shape[:2] != self._shape:
            # Another stream's mask (or nothing observed yet): it cannot be carried to these
            # frames. Drop it; the compositor fails closed or shows it uncompensated.
            self._alpha = None
            self._cum = None
            return
        self._alpha = np.ascontiguousarray(alpha, dtype=np.float32)
        hist = self._history
        ids = [e.frame_id for e in hist]
        cur = hist[-1]
        idx = None
        if frame_id in ids:
            idx = ids.index(frame_id)
            mask_grey = hist[idx].grey
        else:
            mask_grey = self._small_grey(mask_frame)
        self._mask_grey = self._blurred(mask_grey)
        self._mask_grey8 = mask_grey
        if idx is not None and self.settings.chain:
            self._cum = self._ident.copy()
            for e in list(hist)[idx + 1 :]:
                self._advance(e.back)
        elif idx is not None and idx == len(hist) - 1:
            self._cum = self._ident.copy()
        else:
            self._cum = self._ident + self._flow(mask_grey, cur.grey)
        self._refine(cur.grey)
        self._cum_id = cur.frame_id
        self._buf = {}

    def track(self, frame_id: int, frame: np.ndarray) -> Tracked | None:
        """The alpha to apply to this frame (``observe`` was called for it just before)."""
        if self._alpha is None or self._cum is None or not self._history:
            return None
        t0 = self.clock()
        cur = self._history[-1]
        if self._cum_id != cur.frame_id:
            # observe() was not called for this frame (should not happen): chain from scratch
            # by a direct flow, never show an uncompensated mask silently.
            self._cum = self._ident + self._flow(self._mask_grey.astype(np.uint8), cur.grey)
            self._cum_id = cur.frame_id
        s = self.settings
        ah, aw = self._alpha.shape[:2]
        fh, fw = self._cum.shape[:2]
        b = self._buf
        if "map" not in b:
            b["map"] = np.empty((ah, aw, 2), np.float32)
        sx, sy = aw / fw, ah / fh
        mp = cv2.resize(self._cum, (aw, ah), dst=b["map"], interpolation=cv2.INTER_LINEAR)
        # flow px -> alpha px, pixel centres: x_a = (x_f + 0.5) * s - 0.5
        mp *= np.array([sx, sy], np.float32)
        mp += np.array([0.5 * sx - 0.5, 0.5 * sy - 0.5], np.float32)
        alpha = cv2.remap(self._alpha, mp, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        hidden_share = 0.0
        if s.hide_unexplained:
            hidden = self._unexplained(cur.grey, alpha)
            if hidden is not None:
                hid = cv2.resize(hidden, (aw, ah), interpolation=cv2.INTER_NEAREST)
                hid_bool = hid.view(bool)
                hidden_share = float(np.count_nonzero(hid_bool & (alpha > 0))) / hid.size
                alpha[hid_bool] = 0.0
        ms = self._observe_ms + self._mask_ms + (self.clock() - t0) * 1e3
        self._mask_ms = 0.0
        return Tracked(alpha=alpha, hidden_share=hidden_share, ms=ms)

    def _unexplained(self, grey: np.ndarray, alpha: np.ndarray) -> np.ndarray | None:
        """uint8 0/1, flow resolution: person-ish pixels whose change motion does not explain."""
        s = self.settings
        fh, fw = grey.shape
        warped_ref = cv2.remap(
            self._mask_grey, self._cum, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        res = cv2.absdiff(self._blurred(grey), warped_ref)
        thr = max(s.residual_threshold, s.noise_factor * self._noise)
        bad = res > thr
        if not bad.any():
            return None
        small_alpha = cv2.resize(alpha, (fw, fh), interpolation=cv2.INTER_AREA)
        bad &= small_alpha > s.hide_min_alpha
        out = bad.view(np.uint8)
        if s.hide_open_px > 0:
            k = 2 * s.hide_open_px + 1
            out = cv2.erode(out, np.ones((k, k), np.uint8))
        if s.hide_grow_px > 0 and out.any():
            k = 2 * (s.hide_grow_px + s.hide_open_px) + 1
            out = cv2.dilate(out, np.ones((k, k), np.uint8))
        return out

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

Pure numpy/OpenCV, no threads, no I/O.
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


@dataclass
class Tracked:
    alpha: np.ndarray  # same shape/dtype as the alpha given to new_mask, carried to this frame
    hidden_share: float  # share of the frame hidden by the change rule (0..1)
    ms: float  # compensation cost for this frame: observe + track (+ new_mask if one came)


@dataclass
class _Entry:
    frame_id: int
    grey: np.ndarray  # uint8, flow resolution
    # int16 HxWx2, flow px x FLOW_Q (1/32 px steps, +-1024 px): this frame -> previous observed
    # frame. Fixed point rather than float16: the same 2 bytes, but numpy's float16 conversion
    # costs ~0.2 ms per frame at 160x90, the int16 one ~0.02 ms.
    back: np.ndarray | None


FLOW_Q = 32.0


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
        rs = settings.refine_finest_scale
        self._dis_ref.setFinestScale(settings.dis_finest_scale if rs < 0 else rs)
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
        self._blur_cur: np.ndarray | None = None  # blurred grey of the newest frame (float32)
        self._blur_id: int | None = None
        # the active mask
        self._alpha: np.ndarray | None = None
        self._mask_grey8: np.ndarray | None = None  # mask frame at flow res, uint8 (for DIS)
        # mask frame at flow res: [blurred grey, alpha] (float32 HxWx2), warped by one remap
        self._mask_ref: np.ndarray | None = None
        # flow res HxWx4: [x, y] current pixel -> mask frame coords, accumulated motion (flow
        # px) along that pixel's track, scratch (the previous frame's blurred grey, so the
        # frame-to-frame residual comes out of the same remap)
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

    def _threshold(self) -> float:
        s = self.settings
        return max(s.residual_threshold, s.noise_factor * self._noise)

    def _update_noise(self, res: np.ndarray) -> None:
        """Robust sigma (1.4826 x median absolute residual) of this frame vs the previous one
        seen through the flow, on the same blurred pictures the change rule compares; kept as a
        slow running mean (camera gain changes slowly, single frames with motion are outliers
        the median already ignores)."""
        sigma = 1.4826 * float(np.median(res))
        self._noise = sigma if self._noise == 0.0 else 0.8 * self._noise + 0.2 * sigma

    def _new_state(self, blur_prev: np.ndarray | None) -> np.ndarray:
        st = np.empty(self._ident.shape[:2] + (4,), np.float32)
        st[..., :2] = self._ident
        st[..., 2] = 0.0
        if blur_prev is not None:
            st[..., 3] = blur_prev
        return st

    def _advance(self, back: np.ndarray, blur_prev: np.ndarray | None = None) -> np.ndarray | None:
        """``back``: float32 flow this frame -> previous frame. Extend the state by one frame:
        cum'(x) = cum(x + back(x)), the accumulated motion
        likewise plus |back(x)|. With ``blur_prev`` (the previous frame, blurred) it is warped
        by the same remap and the frame-to-frame residual of the newest frame is returned."""
        st = self._state
        m = self._ident + back
        if blur_prev is not None:
            st[..., 3] = blur_prev
        st = cv2.remap(st, m, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        st[..., 2] += cv2.magnitude(back[..., 0], back[..., 1])
        self._state = st
        if blur_prev is None:
            return None
        return cv2.absdiff(self._blur_cur, st[..., 3])

    def _refine(self, grey: np.ndarray, force: bool = False) -> None:
        """Refine the map by a direct flow current -> mask frame, initialised with the map."""
        s = self.settings
        if not s.refine_direct or self._mask_grey8 is None:
            return
        self._since_refine += 1
        if not force and self._since_refine < max(1, s.refine_every):
            return
        self._since_refine = 0
        init = np.ascontiguousarray(self._state[..., :2] - self._ident)
        flow = self._dis_ref.calc(grey, self._mask_grey8, init)
        self._state[..., :2] = self._ident + flow

    # ------------------------------------------------------------------ interface

    def observe(self, frame_id: int, frame: np.ndarray) -> None:
        """Every frame the compositor receives, in order (BGR uint8, full size)."""
        t0 = self.clock()
        s = self.settings
        shape = frame.shape[:2]
        if shape != self._shape:
            self._setup(shape)
        grey = self._small_grey(frame)
        if self._ident is None:
            self._ident = _identity(*grey.shape)
        blur_prev = self._blur_cur if self._blur_id is not None else None
        self._blur_cur = self._blurred(grey)
        self._blur_id = frame_id
        back = None
        if self._history:
            prev = self._history[-1]
            flow = self._flow(prev.grey, grey)
            back = np.rint(flow * FLOW_Q).astype(np.int16)
            self._frames_seen += 1
            measure = self._frames_seen % s.noise_every == 1
            if self._state is not None and self._cum_id == prev.frame_id:
                res = self._advance(flow, blur_prev)
                if res is not None:
                    if measure:
                        self._update_noise(res)
                    if s.hide_band and s.hide_unexplained:
                        st = self._state[..., 2]
                        np.add(st, s.unexplained_px, out=st, where=res > self._threshold())
                self._refine(grey)
                self._cum_id = frame_id
            elif measure and blur_prev is not None:
                warped = cv2.remap(
                    blur_prev,
                    self._ident + flow,
                    None,
                    cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                self._update_noise(cv2.absdiff(self._blur_cur, warped))
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
            self._state = None
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
        fh, fw = mask_grey.shape
        self._mask_ref = np.dstack(
            [
                self._blurred(mask_grey),
                cv2.resize(self._alpha, (fw, fh), interpolation=cv2.INTER_AREA),
            ]
        )
        self._mask_grey8 = mask_grey
        self._state = self._new_state(None)
        if idx is not None and self.settings.chain:
            # Carry over every frame since F; the frame-to-frame residuals are recomputed from
            # the stored grey copies (blurred once each), so a disocclusion or a cut on the way
            # counts as unbounded motion exactly as if the mask had been there all along.
            entries = list(hist)[idx:]
            band = self.settings.hide_band and self.settings.hide_unexplained
            blur_prev = self._blurred(entries[0].grey) if band else None
            keep = self._blur_cur
            for e in entries[1:]:
                back = e.back.astype(np.float32) * (1.0 / FLOW_Q)
                if band:
                    self._blur_cur = self._blurred(e.grey) if e is not cur else keep
                    res = self._advance(back, blur_prev)
                    self._state[..., 2][res > self._threshold()] += self.settings.unexplained_px
                    blur_prev = self._blur_cur
                else:
                    self._advance(back)
            self._blur_cur = keep
        elif idx is not None and idx == len(hist) - 1:
            pass
        else:
            self._state[..., :2] = self._ident + self._flow(mask_grey, cur.grey)
            # no chain, no knowledge of the motion on the way: unbounded (privacy first)
            self._state[..., 2] = self.settings.unexplained_px
        self._refine(cur.grey, force=True)
        self._cum_id = cur.frame_id
        self._buf = {}

    def track(self, frame_id: int, frame: np.ndarray) -> Tracked | None:
        """The alpha to apply to this frame (``observe`` was called for it just before)."""
        if self._alpha is None or self._state is None or not self._history:
            return None
        t0 = self.clock()
        cur = self._history[-1]
        if self._cum_id != cur.frame_id:
            # observe() was not called for this frame (should not happen): chain from scratch
            # by a direct flow, never show an uncompensated mask silently.
            self._state = self._new_state(None)
            self._state[..., :2] = self._ident + self._flow(self._mask_grey8, cur.grey)
            self._state[..., 2] = self.settings.unexplained_px
            self._cum_id = cur.frame_id
        s = self.settings
        cum = np.ascontiguousarray(self._state[..., :2])
        ah, aw = self._alpha.shape[:2]
        fh, fw = cum.shape[:2]
        b = self._buf
        if "map" not in b:
            b["map"] = np.empty((ah, aw, 2), np.float32)
            b["scale"] = np.array([aw / fw, ah / fh], np.float32)
            b["shift"] = np.array([0.5 * aw / fw - 0.5, 0.5 * ah / fh - 0.5], np.float32)
        mp = cv2.resize(cum, (aw, ah), dst=b["map"], interpolation=cv2.INTER_LINEAR)
        # flow px -> alpha px, pixel centres: x_a = (x_f + 0.5) * s - 0.5
        mp *= b["scale"]
        mp += b["shift"]
        alpha = cv2.remap(self._alpha, mp, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        hidden_share = 0.0
        if s.hide_unexplained:
            hidden = self._unexplained(cum)
            if hidden is not None:
                hid = cv2.resize(hidden, (aw, ah), interpolation=cv2.INTER_NEAREST)
                hid_bool = hid.view(bool)
                hidden_share = float(np.count_nonzero(hid_bool & (alpha > 0))) / hid.size
                alpha[hid_bool] = 0.0
        ms = self._observe_ms + self._mask_ms + (self.clock() - t0) * 1e3
        self._mask_ms = 0.0
        return Tracked(alpha=alpha, hidden_share=hidden_share, ms=ms)

    def _unexplained(self, cum: np.ndarray) -> np.ndarray | None:
        """uint8 0/1, flow resolution: person-ish pixels whose change motion does not explain,
        within the band the silhouette can have swept since the mask frame."""
        s = self.settings
        ref = cv2.remap(
            self._mask_ref, cum, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        res = cv2.absdiff(self._blur_cur, ref[..., 0])
        thr = self._threshold()
        bad = res > thr
        if not bad.any():
            return None
        small_alpha = ref[..., 1]
        cand = small_alpha > s.hide_min_alpha  # where the room could show
        band_ok = None
        if s.hide_band:
            # distance (flow px) of each pixel inside the warped mask to its edge
            inside = (small_alpha >= 0.5).view(np.uint8)
            dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
            st = self._state
            disp = cum - self._ident
            motion = cv2.magnitude(disp[..., 0], disp[..., 1])
            if s.band_path:
                motion = np.maximum(st[..., 2], motion)
            else:
                motion[st[..., 2] >= s.unexplained_px] = s.unexplained_px
            # D(x): the largest motion within reach of x (the moving edge is where the motion is,
            # the uncovered room next to it may itself be still)
            # uint8 flow px, rounded up (never below the motion; saturates at 255, more than any
            # distance at flow resolution): 8-bit morphology is the fast one
            motion8 = cv2.convertScaleAbs(motion, beta=0.5)
            finite = cv2.bitwise_and(inside, (motion < s.unexplained_px).view(np.uint8))
            top = cv2.minMaxLoc(motion, mask=finite)[1] if finite.any() else 0.0
            reach = int(min(s.band_max_px, np.ceil(top)))
            if reach > 0:
                k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
                motion8 = cv2.dilate(motion8, k)
            band_ok = dist <= motion8 + np.float32(s.band_margin_px)
            cand &= band_ok
        bad &= cand
        out = bad.view(np.uint8)
        if s.hide_open_px > 0:
            k = 2 * s.hide_open_px + 1
            out = cv2.erode(out, np.ones((k, k), np.uint8))
        if s.hide_grow_px > 0 and out.any():
            k = 2 * (s.hide_grow_px + s.hide_open_px) + 1
            kernel = np.ones((k, k), np.uint8)
            ring = cv2.dilate(out, kernel)
            if s.hide_grow_low > 0:
                # hysteresis: a pixel of the grown ring stays visible only where the flow-res
                # analysis vouches for it: person there (warped alpha >= 0.5) and its residual
                # below this share of the threshold (or outside the band). Elsewhere the ring is
                # hidden, as a plain dilation would (the blurred border of a change; the
                # working-res alpha's edge, which can reach a flow pixel the flow-res alpha calls
                # background). The holes inside a change are closed: where the person's texture
                # happens to match the room's, the room would show through.
                big = np.ones((2 * k - 1, 2 * k - 1), np.uint8)
                closed = cv2.erode(cv2.dilate(out, big), big)
                calm = res <= s.hide_grow_low * thr
                if band_ok is not None:
                    calm |= ~band_ok
                vouched = calm & (small_alpha >= 0.5)
                ring[vouched] = 0
                out = closed | ring
            else:
                out = ring
        return out

"""Pure picture rules of the display: what to hide, what the window says. No sockets, no clock.

Two kinds of pictures leave the display: the *call picture* (what the virtual camera sends and the
recording keeps: the compositor's picture, or the fully hidden last one while the compositor is
gone) and the *window picture* (the call picture plus the self-view extras: badge, stats overlay,
mirroring). Nothing drawn for the window ever reaches the call or the recording.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common import protocol

# Output.hidden -> what the badge says (the compositor hid the whole picture, fail-closed)
HIDDEN_TEXT = {
    "waiting": "waiting for the first mask",
    "stale": "masks too old",
    "mismatch": "mask does not fit the picture",
}
NO_PICTURES = "no picture from the compositor"
STALE_AFTER_S = 0.5  # no new picture for this long: the compositor is gone, hide the last one


def badge_text(msg: protocol.Output) -> str | None:
    """The fail-closed badge of a compositor picture, or None when nothing is hidden."""
    if not msg.fail_closed:
        return None
    return "hidden: " + HIDDEN_TEXT.get(msg.hidden, "no trustworthy mask")


def is_stale(last_picture_at: float | None, now: float, after: float = STALE_AFTER_S) -> bool:
    """True once a picture was shown and no new one came for ``after`` seconds."""
    return last_picture_at is not None and now - last_picture_at >= after


def hide(image: np.ndarray) -> np.ndarray:
    """Make a picture unrecognisable: 1/20 of the width, blurred, scaled back, darkened.

    At 640 px wide that leaves 32x18 colour blobs blurred over several blobs: no face, no text.
    """
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // 20), max(1, h // 20)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.convertScaleAbs(out, alpha=0.6)


def draw_badge(image: np.ndarray, text: str) -> np.ndarray:
    """Small corner badge: a red dot and one line of text (drawn on a copy)."""
    out = image.copy()
    w = out.shape[1]
    scale = max(0.35, w / 1600)
    r = max(4, w // 120)
    cv2.circle(out, (r * 2, r * 2), r, (0, 0, 255), -1, cv2.LINE_AA)
    org = (r * 4, r * 2 + r // 2)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_lines(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """The stats overlay: lines of text in the bottom-left corner, on a dark band (a copy)."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, w / 1400)
    step = int(22 * scale / 0.45)
    top = max(0, h - step * len(lines) - 8)
    out[top:] = (out[top:] * 0.4).astype(np.uint8)
    for i, line in enumerate(lines):
        y = top + step * (i + 1)
        cv2.putText(out, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)
    return out


@dataclass(frozen=True)
class Readings:
    """What the stats overlay shows (None: not measured yet)."""

    fps: float
    latency_ms: float | None
    mask_age_ms: float | None
    mask_fps: float | None = None


def stats_lines(r: Readings) -> list[str]:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    rate = "-" if r.mask_fps is None else f"{r.mask_fps:.2f}/s"
    return [
        f"display {r.fps:.1f} fps",
        f"masks {rate}",
        f"latency {ms(r.latency_ms)}",
        f"mask age {ms(r.mask_age_ms)}",
    ]


@dataclass(frozen=True)
class Look:
    """Window-only extras for one picture."""

    badge: str | None = None
    stats: Readings | None = None  # None: overlay off
    mirror: bool = False
    alpha: np.ndarray | None = None  # mask view: the alpha the compositor applied (None: off)


def mask_view(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The picture dimmed, with what the mask keeps sharp tinted green (a copy).

    Why a tint over the picture rather than the bare mask: what the user wants to see is where
    the mask sits on them (a missing hand, a chair kept sharp), which needs the picture under it.
    """
    out = cv2.convertScaleAbs(image, alpha=0.5)
    out[..., 1] = cv2.add(out[..., 1], cv2.convertScaleAbs(alpha, alpha=0.5))
    return out


def window_picture(call_picture: np.ndarray, look: Look) -> np.ndarray:
    """The self-view: mask view if on, mirrored if asked, then badge and overlay (text is never
    mirrored)."""
    out, badge = call_picture, look.badge
    if look.alpha is not None and look.alpha.shape == out.shape[:2]:
        out = mask_view(out, look.alpha)
        badge = badge or "mask view"
    out = cv2.flip(out, 1) if look.mirror else out
    if badge:
        out = draw_badge(out, badge)
    if look.stats is not None:
        out = draw_lines(out, stats_lines(look.stats))
    return out

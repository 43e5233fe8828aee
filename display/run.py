"""Display: show the composited picture in a window ("Video Call"), record it, send it to a call.

``p`` toggles privacy (sent to the compositor, which owns the state), ``s`` toggles a stats overlay,
``m`` the mask view (the compositor then sends the applied alpha with every picture), ``q`` or
closing the window quits the whole pipeline (the launcher stops everything when the display
exits). The display always shows the newest picture and drops older ones. If no picture comes for
``--stale-after`` (the compositor crashed and is being restarted), it shows the last one fully
hidden with a badge until pictures come again. What the window adds (badge, overlay, mask view,
mirroring) never reaches the virtual camera or the recording.

Layout: ``picture`` (pure rules), ``window`` (highgui), ``recording``/``mp4`` and ``vcam`` (the
call outputs); here the sockets, the clock and the thin loop.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from common import config as settings
from common import protocol, security, sockets
from common.config import OneLineParser
from common.errors import FatalError
from common.runtime import Runtime
from common.stats import Stats
from display import picture
from display.config import DisplayConfig
from display.recording import Recording, open_recording
from display.vcam import Opener, VirtualCamera, open_pyvirtualcam
from display.window import TITLE, Window, has_display

WINDOW = TITLE


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m display",
        description=(
            "Show the privacy-mode picture: 'p' toggles privacy, 's' stats, 'm' mask view, "
            "'q' quits."
        ),
    )
    settings.add_arguments(p, DisplayConfig)
    return p


def parse(argv: Sequence[str] | None = None, environ: dict | None = None) -> DisplayConfig:
    config = settings.from_namespace(DisplayConfig, build_parser().parse_args(argv))
    environ = os.environ if environ is None else environ
    if not config.headless and config.virtual_camera is None and not has_display(environ):
        raise FatalError("no display: use --headless or --virtual-camera")
    return config


class Link:
    """The two sockets to the compositor: pictures in (newest only), key presses out."""

    def __init__(self, rt: Runtime, config: DisplayConfig) -> None:
        try:
            link = security.link_key(config.link_keys)
            self.frames = sockets.make_socket(rt.ctx, zmq.PULL, connect=config.connect, link=link)
            self.control = sockets.make_socket(
                rt.ctx, zmq.PUSH, connect=config.control, hwm=10, link=link
            )
        except zmq.ZMQError as exc:
            raise FatalError(f"cannot connect to the compositor: {exc.strerror}") from None
        self.bad = sockets.BadMessages()

    def receive(self, timeout_ms: int) -> sockets.Newest:
        if not self.frames.poll(timeout_ms):
            return sockets.Newest()
        return sockets.recv_newest(self.frames, self.bad, protocol.Output, (protocol.End,))

    def toggle_privacy(self) -> None:
        sockets.try_send(self.control, protocol.encode(protocol.Control(privacy="toggle")))

    def ask_view(self, mask: bool) -> None:
        sockets.try_send(self.control, protocol.encode(protocol.View(mask=mask)))

    def close(self) -> None:
        self.frames.close(0)
        self.control.close(0)


class CallOutputs:
    """Where the call picture goes besides the window: the recording and the virtual camera."""

    def __init__(self, config: DisplayConfig, rt: Runtime, opener: Opener) -> None:
        self.config = config
        self.log = rt.log
        self.recording: Recording | None = None
        self.camera = (
            VirtualCamera(config.virtual_camera, opener) if config.virtual_camera else None
        )

    def send(self, image: np.ndarray, fps: float, now: float) -> None:
        if self.config.output is not None:
            if self.recording is None:
                size = (image.shape[1], image.shape[0])
                self.recording = open_recording(self.config.output, fps, size, self.log)
            self.recording.add(image, now)
        if self.camera is not None:
            first = self.camera.cam is None
            self.camera.send(image, fps)
            if first:
                w, h = self.camera.size
                self.log.info("virtual camera: %dx%d at %.2f fps", w, h, fps)

    def tick(self, now: float) -> None:
        if self.recording is not None:
            self.recording.flush_if_due(now)

    def close(self) -> None:
        if self.recording is not None:
            self.recording.close()
        if self.camera is not None:
            self.camera.close()


@dataclass
class Last:
    """The last picture from the compositor and what was done with it."""

    msg: protocol.Output | None = None
    at: float | None = None  # when it arrived (monotonic)
    hidden: np.ndarray | None = None  # its fully hidden version, once the compositor went silent
    next_hidden_at: float = 0.0  # when the call gets the hidden picture again (at the camera rate)
    arrivals: deque = field(default_factory=lambda: deque(maxlen=31))

    def fps(self) -> float:
        """Display rate over the last 30 pictures."""
        a = self.arrivals
        return (len(a) - 1) / (a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else 0.0


class Display:
    """The stage's state: the last picture, what the window shows, the counters."""

    def __init__(self, config: DisplayConfig, rt: Runtime, opener: Opener) -> None:
        self.config, self.rt, self.log = config, rt, rt.log
        self.stats = Stats("display", rt.log, config.stats_json)
        self.link = Link(rt, config)
        self.outputs = CallOutputs(config, rt, opener)
        self.window = Window() if self._wants_window() else None
        self.last = Last()
        self.privacy: bool | None = None
        self.show_stats = False
        self.show_mask = False
        self.view_asked_at = -float("inf")  # the mask view is asked again every VIEW_REPEAT_S
        self.started = time.monotonic()
        self.stats.live = lambda: {
            "display_fps": round(self.stats.rate("frames_displayed"), 2),
            "privacy": self.privacy,
            "bad_messages": self.link.bad.count,
        }

    def _wants_window(self) -> bool:
        if self.config.headless:
            return False
        if not has_display(os.environ):  # --virtual-camera without a display: no window
            self.log.info("no display: running without a window (virtual camera only)")
            return False
        return True

    def step(self) -> str | None:
        """One turn of the loop; returns why to stop ("quit", "ended", ...) or None."""
        newest = self.link.receive(10 if self.window else 20)
        now = time.monotonic()
        if newest.older:
            self.stats.count("frames_dropped", newest.older)  # newer ones came: shown instead
        if newest.message is not None:
            if self.on_picture(newest.message, now):
                return "done"
        elif picture.is_stale(self.last.at, now, self.config.stale_after):
            self.on_silence(now)
        self.outputs.tick(now)
        if self.show_mask and now - self.view_asked_at >= VIEW_REPEAT_S:
            self.link.ask_view(True)  # again: a restarted compositor does not know it
            self.view_asked_at = now
        stop = self.on_keys() if self.window else None
        if stop is None and any(isinstance(m, protocol.End) for m in newest.others):
            stop = "ended"
        if stop is None and self.idle(now):
            stop = "idle"
        self.stats.tick(self.status())
        return stop

    def on_picture(self, msg: protocol.Output, now: float) -> bool:
        """A new picture: to the call outputs, then the window. True once --max-frames is hit."""
        self.last.msg, self.last.at, self.last.hidden = msg, now, None
        self.last.arrivals.append(now)
        self.outputs.send(msg.image, msg.fps, now)
        self.show(msg.image, picture.badge_text(msg), msg)
        if msg.privacy != self.privacy:
            self.privacy = msg.privacy
            self.log.info("privacy %s", "on" if msg.privacy else "off")
            if self.window:
                self.window.retitle(f"{WINDOW} - privacy {'on' if msg.privacy else 'off'}")
        self.stats.count("frames_displayed")
        self.stats.sample("e2e_latency_ms", max(0.0, (time.time() - msg.ts) * 1000))
        if (
            self.config.max_frames
            and self.stats.counts["frames_displayed"] >= self.config.max_frames
        ):
            self.log.info("displayed %d frames, done", self.config.max_frames)
            return True
        return False

    def on_silence(self, now: float) -> None:
        """The compositor went silent: the last picture, fully hidden, at the camera rate."""
        last = self.last
        if last.msg is None or now < last.next_hidden_at:
            return
        if last.hidden is None:
            self.log.warning("no picture for %.1f s: showing the last one hidden", now - last.at)
            last.hidden = picture.hide(last.msg.image)
            self.show(last.hidden, picture.NO_PICTURES, last.msg)
        self.outputs.send(last.hidden, last.msg.fps, now)
        self.stats.count("frames_hidden_no_input")
        last.next_hidden_at = now + 1.0 / last.msg.fps

    def show(self, image: np.ndarray, badge: str | None, msg: protocol.Output) -> None:
        if self.window is None:
            return
        readings = None
        if self.show_stats:
            lat = self.stats.series.get("e2e_latency_ms")
            readings = picture.Readings(
                self.last.fps(), lat[-1] if lat else None, msg.mask_age_ms, msg.mask_fps
            )
        alpha = msg.alpha if self.show_mask and image is msg.image else None
        look = picture.Look(badge=badge, stats=readings, mirror=self.config.mirror, alpha=alpha)
        self.window.show(picture.window_picture(image, look))

    def on_keys(self) -> str | None:
        assert self.window is not None
        action = self.window.poll()
        if action == "quit":
            self.log.info("quit requested")
            return "quit"
        if action == "privacy":
            self.link.toggle_privacy()
            self.log.info("privacy toggle requested")
        elif action == "stats":
            self.show_stats = not self.show_stats
            self.log.info("stats overlay %s", "on" if self.show_stats else "off")
        elif action == "mask":
            self.show_mask = not self.show_mask
            self.link.ask_view(self.show_mask)
            self.view_asked_at = time.monotonic()
            self.log.info("mask view %s", "on" if self.show_mask else "off")
        if self.window.closed():
            self.log.info("window closed")
            return "closed"
        return None

    def idle(self, now: float) -> bool:
        limit = self.config.idle_timeout
        since = self.last.at if self.last.at is not None else self.started
        if limit and now - since > limit:
            self.log.error("no picture for %.0f s; is the compositor running?", limit)
            return True
        return False

    def status(self) -> str:
        lat = self.stats.series.get("e2e_latency_ms")
        c = self.stats.counts
        return (
            f"{self.stats.recent_rate('frames_displayed'):.1f} fps, latency "
            f"{lat[-1] if lat else float('nan'):.0f} ms, {c['frames_displayed']} shown, "
            f"{c['frames_dropped']} dropped, {c['frames_hidden_no_input']} hidden (no input)"
        )

    def close(self) -> None:
        try:
            self.outputs.close()
        finally:
            if self.window is not None:
                self.window.close()
            self.stats.tick(force=True)
            self.link.close()


EXIT_CODES = {"idle": 3}
VIEW_REPEAT_S = 1.0  # the mask view is asked for again this often while on


def run(config: DisplayConfig, rt: Runtime, opener: Opener = open_pyvirtualcam) -> int:
    """Show pictures until q, the window closes, the stream ends, --max-frames or a signal.

    ``opener`` opens the virtual camera device (the edge a test replaces: no device here).
    """
    display = Display(config, rt, opener)
    try:
        while not rt.stopping():
            stop = display.step()
            if stop is not None:
                if stop == "ended":
                    rt.log.info("stream ended")
                return EXIT_CODES.get(stop, 0)
        return 0
    finally:
        display.close()

"""Compositor: apply the newest mask to every frame, at camera rate, and hand out work to workers.

Frames arrive from capture; each one is composited at once with the newest mask available (newest
``frame_id`` wins, so a slow worker can never roll the picture back) and sent to the display. The
same frame becomes "the newest frame nobody is working on", handed to the next idle worker. Masks
arrive when they arrive. In privacy mode, a frame without a trustworthy mask (none yet, older than
``--max-mask-age``, from another stream) is hidden completely: privacy fails closed.

``--lockstep`` (offline): every frame waits for its own mask; nothing is dropped or reused.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import zmq
from zmq.utils.monitor import parse_monitor_message

from common import protocol, security, sockets
from common.errors import FatalError
from common.runtime import Runtime
from common.stats import Stats
from compositor import compose
from compositor.workers import WorkerPool

DEFAULT_FRAMES = "tcp://127.0.0.1:5550"
DEFAULT_INFER = "tcp://127.0.0.1:5551"
DEFAULT_OUT = "tcp://127.0.0.1:5552"
DEFAULT_CONTROL = "tcp://127.0.0.1:5553"
HEARTBEAT_S = 1.0
# Default staleness limit, from measurement: the slowest shipped model (Mask R-CNN, 100 proposals)
# takes 2-3 s a forward pass on a 2-core laptop-class CPU while the pipeline runs beside it, so a
# mask is normally up to two forward passes old when replaced (p95 ~5 s measured here). 6 s keeps
# that steady state from blinking to fail-closed, yet hides the room within seconds when a worker
# really stops. launch.py uses each model's own value (MAX_MASK_AGE_S in its segmenter module).
DEFAULT_MAX_MASK_AGE = 6.0


@dataclass(frozen=True)
class CompositorConfig:
    frames: str = DEFAULT_FRAMES
    infer_bind: str = DEFAULT_INFER
    out_bind: str = DEFAULT_OUT
    control_bind: str = DEFAULT_CONTROL
    privacy: bool = True
    lockstep: bool = False
    max_mask_age: float = DEFAULT_MAX_MASK_AGE
    worker_timeout: float = 15.0
    remote_encoding: str = "jpeg"
    jpeg_quality: int = 85
    keys: Path | None = None
    save_alpha: Path | None = None
    stats_json: Path | None = None
    look: compose.ComposeSettings = field(default_factory=compose.ComposeSettings)


def add_look_arguments(p: argparse.ArgumentParser) -> None:
    """Background flags, shared with launch.py."""
    p.add_argument("--privacy", choices=("on", "off"), default="on", help="privacy mode at start")
    p.add_argument(
        "--blur",
        type=float,
        default=1.0,
        help="background blur strength (1 = the tutorial's look, scaled to the width)",
    )
    p.add_argument(
        "--background",
        type=Path,
        default=None,
        help="replace the background with this image or (looped) video",
    )
    p.add_argument("--background-color", default=None, help="replace with a colour: '#2040a0'")
    p.add_argument(
        "--no-refine",
        action="store_true",
        help="apply the raw model mask (bilinear only): the quality baseline",
    )
    p.add_argument("--no-temporal", action="store_true", help="no temporal mask smoothing")
    p.add_argument(
        "--max-mask-age",
        type=float,
        default=None,
        help="older masks are not trusted: the whole picture is hidden (seconds; default "
        f"{DEFAULT_MAX_MASK_AGE:g}, launch.py picks it per model)",
    )


def look_settings(a: argparse.Namespace) -> compose.ComposeSettings:
    if a.blur <= 0:
        raise FatalError("--blur must be > 0")
    if a.max_mask_age is not None and a.max_mask_age <= 0:
        raise FatalError("--max-mask-age must be > 0 seconds")
    if a.background is not None and not a.background.is_file():
        raise FatalError(f"--background {a.background} is not a file (give an image or a video)")
    color = compose.parse_color(a.background_color) if a.background_color else None
    return compose.ComposeSettings(
        blur=a.blur,
        background=a.background,
        background_color=color,
        refine=not a.no_refine,
        temporal=not a.no_temporal,
    )


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """How workers are served, shared with launch.py (one definition, one default each)."""
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=15.0,
        help="a worker silent this long on a frame loses its slot (seconds)",
    )
    p.add_argument(
        "--remote-encoding",
        choices=("raw", "jpeg"),
        default="jpeg",
        help="frames to non-loopback workers (loopback is always raw)",
    )
    p.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality for remote workers")
    p.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="key folder (python -m inference keys) for non-loopback workers",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m compositor",
        description="Blur or replace the background of every frame with the newest person mask.",
    )
    p.add_argument("--frames", default=DEFAULT_FRAMES, help="capture's endpoint to connect to")
    p.add_argument("--infer-bind", default=DEFAULT_INFER, help="where inference workers connect")
    p.add_argument("--out-bind", default=DEFAULT_OUT, help="where the display connects")
    p.add_argument("--control-bind", default=DEFAULT_CONTROL, help="display's key commands")
    add_look_arguments(p)
    p.add_argument("--lockstep", action="store_true", help="every frame waits for its own mask")
    add_worker_arguments(p)
    p.add_argument("--save-alpha", type=Path, default=None, help="write applied alpha PNGs here")
    p.add_argument("--stats-json", type=Path, default=None, help="write stats JSON here")
    return p


def parse(argv: Sequence[str] | None = None) -> CompositorConfig:
    a = build_parser().parse_args(argv)
    if a.worker_timeout <= 0 or not 1 <= a.jpeg_quality <= 100:
        raise FatalError("--worker-timeout must be > 0 and --jpeg-quality in 1..100")
    return CompositorConfig(
        a.frames,
        a.infer_bind,
        a.out_bind,
        a.control_bind,
        a.privacy == "on",
        a.lockstep,
        DEFAULT_MAX_MASK_AGE if a.max_mask_age is None else a.max_mask_age,
        a.worker_timeout,
        a.remote_encoding,
        a.jpeg_quality,
        a.keys,
        a.save_alpha,
        a.stats_json,
        look_settings(a),
    )


@dataclass
class Frame:
    """A frame received from capture (image may be a read-only view of the zmq buffer)."""

    header: dict[str, Any]
    image: Any

    @property
    def id(self) -> int:
        return self.header["frame_id"]


@dataclass
class AppliedMask:
    """The newest mask applied: which stream and frame it belongs to, when that was captured."""

    stream: int = -1
    frame_id: int = -1
    ts: float = 0.0

    def newer(self, header: dict[str, Any]) -> bool:
        return header.get("stream") != self.stream or header["frame_id"] > self.frame_id


@dataclass
class Links:
    frames_in: zmq.Socket
    router: zmq.Socket
    out: zmq.Socket
    control: zmq.Socket
    monitor: zmq.Socket | None
    auth: Any


def _open(config: CompositorConfig, rt: Runtime) -> Links:
    frames_in = sockets.make_socket(rt.ctx, zmq.PULL, connect=config.frames)
    out = sockets.make_socket(rt.ctx, zmq.PUSH, bind=config.out_bind)
    control = sockets.make_socket(rt.ctx, zmq.PULL, bind=config.control_bind, hwm=100)
    router = sockets.make_socket(rt.ctx, zmq.ROUTER, hwm=10)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished worker raises, not vanishes
    auth = security.server(rt.ctx, router, config.infer_bind, config.keys)
    monitor = None
    if auth is not None:  # log peers refused by authentication or failing the handshake
        monitor = router.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )
    try:
        router.bind(config.infer_bind)
    except zmq.ZMQError as exc:
        raise FatalError(f"cannot listen on {config.infer_bind}: {exc.strerror}") from None
    return Links(frames_in, router, out, control, monitor, auth)


class Compositor:
    """State shared by the real-time and lock-step loops: sockets, workers, masks, compositing."""

    def __init__(self, config: CompositorConfig, rt: Runtime) -> None:
        self.config = config
        self.rt = rt
        self.look = compose.new_state(config.look)
        self.links = _open(config, rt)
        self.pool = WorkerPool(config.worker_timeout)
        self.stats = Stats("compositor", rt.log, config.stats_json)
        self.stats.live = self.live_stats
        self.bad = sockets.BadMessages()
        self.privacy = config.privacy
        self.mask = AppliedMask()
        # frames handed to workers (kept as refinement guides) and when, for the round trip
        self.in_flight: dict[int, tuple[Frame, float]] = {}
        self.masks_by_worker: dict[str, int] = {}
        self.last_heartbeat = 0.0
        self.last_refused_log = 0.0
        self.round_trip_s = 0.0  # moving average of dispatch -> mask, for pacing several workers
        self.last_dispatch = 0.0
        self.remote = not sockets.is_loopback(config.infer_bind)
        if config.save_alpha:
            config.save_alpha.mkdir(parents=True, exist_ok=True)

    # --- workers ---------------------------------------------------------------------------
    def handle_workers(self, on_mask) -> None:
        """Read every queued worker message; masks newer than the applied one are accepted."""
        now_wall = time.time()
        for parts in sockets.drain(self.links.router):
            if len(parts) < 2:
                self.bad("router message without identity", now_wall)
                continue
            identity = bytes(parts[0].buffer)
            msg = sockets.decode_or_count(parts[1:], self.bad, now_wall)
            if msg is None:
                continue
            name = str(msg.header.get("worker", ""))[:64]
            if msg.kind == protocol.READY:
                if self.pool.ready(identity, name, time.monotonic()):
                    self.rt.log.info("worker %s joined (%d now)", name, len(self.pool))
            elif msg.kind == protocol.MASK and msg.image is not None and msg.image.ndim == 2:
                if self.pool.ready(identity, name, time.monotonic()):
                    self.rt.log.info("worker %s (re)joined with a mask", name)
                self.stats.count("masks_received")
                self.stats.sample("infer_ms", float(msg.header.get("infer_ms", 0)))
                self.stats.count("mask_bytes", parts[2].buffer.nbytes if len(parts) > 2 else 0)
                guide, sent_at = self.in_flight.pop(msg.header["frame_id"], (None, None))
                if sent_at is not None:
                    rtt = time.monotonic() - sent_at
                    self.round_trip_s = (
                        rtt if not self.round_trip_s else (0.8 * self.round_trip_s + 0.2 * rtt)
                    )
                on_mask(msg, guide, name)
            else:
                self.bad(f"unexpected {msg.kind} from a worker", now_wall)

    def accept(self, msg: protocol.Message, guide: Frame | None, name: str) -> bool:
        """Apply the mask if it is newer than the current one (newest frame_id wins)."""
        h = msg.header
        if not self.mask.newer(h):
            self.stats.count("masks_stale")
            return False
        compose.accept_mask(
            self.look,
            msg.image,
            guide.image if guide else None,
            continuous=not (guide.header.get("still") if guide else False),
        )
        self.mask = AppliedMask(h.get("stream", 0), h["frame_id"], float(h["ts"]))
        self.masks_by_worker[name] = self.masks_by_worker.get(name, 0) + 1
        self.stats.count("masks_applied")
        return True

    def paced(self) -> bool:
        """True if handing out another frame now would bunch the workers up.

        With several workers, frames handed out close together come back as masks close
        together, in whatever order the workers' jitter gives: the older one arrives last and is
        discarded (newest wins), wasting a whole forward pass. Spacing hand-outs by the round
        trip divided by the number of workers makes masks arrive evenly spaced and in order, so
        N workers really give more masks. The spacing is 0.7 of the even share so that jitter
        does not keep a worker idle (measured with two stand-in workers: stale masks 37 % -> ~20 %,
        applied mask rate 1.9/s -> 2.4-2.8/s, one worker 2.0/s).
        """
        n = len(self.pool)
        return n > 1 and time.monotonic() - self.last_dispatch < 0.7 * self.round_trip_s / n

    def dispatch(self, frame: Frame) -> bool:
        """Hand ``frame`` to the longest-idle worker; False if none is idle."""
        while True:
            identity = self.pool.take_idle()
            if identity is None:
                return False
            fields = {
                k: v
                for k, v in frame.header.items()
                if k not in ("p", "v", "kind", "shape", "dtype", "enc")
            }
            enc = self.config.remote_encoding if self.remote else "raw"
            parts = [
                identity,
                *protocol.encode(
                    protocol.FRAME, frame.image, enc=enc, quality=self.config.jpeg_quality, **fields
                ),
            ]
            try:
                self.links.router.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            except zmq.ZMQError:  # vanished or flooded worker: forget it, try the next one
                self.worker_lost(identity)
                continue
            self.stats.count(
                "frame_bytes_to_workers", len(parts[-1]) if enc != "raw" else frame.image.nbytes
            )
            self.stats.count("frames_to_workers")
            now = time.monotonic()
            self.pool.assign(identity, frame.id, now)
            self.in_flight[frame.id] = (frame, now)
            self.last_dispatch = now
            if len(self.in_flight) > 64:  # masks that never came back: forget their guides
                for old in sorted(self.in_flight)[:-32]:
                    del self.in_flight[old]
            return True

    def worker_lost(self, identity: bytes) -> None:
        slot = self.pool.lost(identity)
        if slot is not None:
            self.rt.log.warning("worker %s is gone, slot dropped (pipeline goes on)", slot.name)

    def housekeeping(self) -> None:
        """Heartbeats to idle workers, worker expiry, control messages, monitor events."""
        now = time.monotonic()
        for slot in self.pool.expire(now):
            self.rt.log.warning("worker %s silent, slot dropped (pipeline goes on)", slot.name)
        if now - self.last_heartbeat >= HEARTBEAT_S:
            self.last_heartbeat = now
            hb = protocol.encode(protocol.HEARTBEAT)
            for identity in list(self.pool.idle):
                try:
                    self.links.router.send_multipart([identity, *hb], flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    self.worker_lost(identity)
        for parts in sockets.drain(self.links.control, limit=100):
            msg = sockets.decode_or_count(parts, self.bad, time.time())
            if msg is not None and msg.kind == protocol.CONTROL:
                if msg.header.get("privacy") == "toggle":
                    self.privacy = not self.privacy
                elif isinstance(msg.header.get("privacy"), bool):
                    self.privacy = msg.header["privacy"]
                self.rt.log.info("privacy %s", "on" if self.privacy else "off")
        if self.links.monitor is not None:
            for parts in sockets.drain(self.links.monitor, limit=100):
                event = parse_monitor_message([p.bytes for p in parts])
                self.refused(event.get("endpoint", b"?").decode(errors="replace"))

    def refused(self, endpoint: str) -> None:
        """Count a peer refused at the handshake (bad key, no key, garbage); log it rate-limited."""
        self.stats.count("peers_refused")
        n = self.stats.counts["peers_refused"]
        now = time.monotonic()
        if n == 1 or now - self.last_refused_log >= 5.0:
            self.last_refused_log = now
            self.rt.log.warning(
                "refused a connection on %s: unknown or wrong key, or not our protocol "
                "(%d refused so far)",
                endpoint,
                n,
            )

    # --- frames ----------------------------------------------------------------------------
    def composite_and_send(self, frame: Frame, blocking: bool) -> bool:
        """Composite with the newest mask (or fail closed) and send to the display."""
        t0 = time.perf_counter()
        h = frame.header
        age = h["ts"] - self.mask.ts if self.mask.frame_id >= 0 else None
        mask_ok = (
            self.mask.frame_id >= 0
            and self.mask.stream == h.get("stream")
            and (self.config.lockstep or age <= self.config.max_mask_age)
        )
        rendered = compose.render(self.look, frame.image, privacy=self.privacy, mask_ok=mask_ok)
        if age is not None and self.mask.stream == h.get("stream"):
            self.stats.sample("mask_age_ms", age * 1000)
        fail_closed = bool(rendered.fail_closed)
        self.stats.sample("compose_ms", (time.perf_counter() - t0) * 1000)
        fields = {k: h[k] for k in ("frame_id", "ts", "index", "stream", "fps", "still") if k in h}
        parts = protocol.encode(
            protocol.OUTPUT,
            rendered.image,
            privacy=self.privacy,
            fail_closed=fail_closed,
            mask_age_ms=None if age is None else round(age * 1000, 1),
            **fields,
        )
        sent = (
            sockets.send_blocking(self.links.out, parts, self.rt.stopping)
            if blocking
            else sockets.try_send(self.links.out, parts)
        )
        if sent:
            self.stats.count("frames_composited")
            self.stats.count("fail_closed_frames", int(fail_closed))
            if self.config.save_alpha:
                name = self.config.save_alpha / f"{int(h.get('index', h['frame_id'])):06d}.png"
                cv2.imwrite(str(name), rendered.alpha)
        else:
            self.stats.count("frames_dropped")
        return sent

    def read_frames(self) -> tuple[Frame | None, bool]:
        """Drain capture's queue: (newest frame or None, end seen). Older frames count as drops."""
        newest, ended = None, False
        for parts in sockets.drain(self.links.frames_in):
            msg = sockets.decode_or_count(parts, self.bad, time.time())
            if msg is None:
                continue
            if msg.kind == protocol.END:
                ended = True
            elif msg.kind == protocol.FRAME and msg.image is not None and msg.image.ndim == 3:
                if newest is not None:
                    self.stats.count("frames_dropped")
                newest = Frame(msg.header, msg.image)
            else:
                self.bad(f"unexpected {msg.kind} from capture", time.time())
        return newest, ended

    def status(self) -> str:
        s = self.stats
        age = s.series.get("mask_age_ms")
        return (
            f"{s.recent_rate('frames_composited'):.1f} fps out, "
            f"{s.recent_rate('masks_applied'):.2f} masks/s, "
            f"mask age {age[-1] if age else float('nan'):.0f} ms, workers {len(self.pool)}, "
            f"dropped {s.counts['frames_dropped']}, fail-closed {s.counts['fail_closed_frames']}, "
            f"privacy {'on' if self.privacy else 'off'}"
        )

    def send_end(self) -> None:
        deadline = time.monotonic() + 5.0
        sockets.send_blocking(
            self.links.out,
            protocol.encode(protocol.END),
            lambda: self.rt.stopping() or time.monotonic() > deadline,
        )

    def live_stats(self) -> dict[str, Any]:
        """The compositor's derived stats, computed whenever the stats file is written."""
        s = self.stats
        return dict(
            inference_fps=round(s.rate("masks_applied"), 3),
            masks_received_fps=round(s.rate("masks_received"), 3),
            masks_by_worker=dict(self.masks_by_worker),
            worker_timeouts=self.pool.timeouts,
            bad_messages=self.bad.count,
            bytes_per_frame_to_workers=_per(
                s.counts["frame_bytes_to_workers"], s.counts["frames_to_workers"]
            ),
            bytes_per_mask=_per(s.counts["mask_bytes"], s.counts["masks_received"]),
            privacy=self.privacy,
        )

    def finish(self) -> None:
        self.stats.tick(self.status(), force=True)
        if self.links.auth is not None:
            self.links.auth.stop()


def _per(total: int, n: int) -> float | None:
    return round(total / n, 1) if n else None


def run(config: CompositorConfig, rt: Runtime) -> int:
    c = Compositor(config, rt)
    rt.log.info(
        "compositor: frames from %s, workers at %s, display at %s%s",
        config.frames,
        config.infer_bind,
        config.out_bind,
        " (lockstep)" if config.lockstep else "",
    )
    try:
        return (run_lockstep if config.lockstep else run_realtime)(c)
    finally:
        c.finish()


def _poller(c: Compositor, with_frames: bool = True) -> zmq.Poller:
    poller = zmq.Poller()
    for sock in (c.links.router, c.links.control, c.links.monitor):
        if sock is not None:
            poller.register(sock, zmq.POLLIN)
    if with_frames:
        poller.register(c.links.frames_in, zmq.POLLIN)
    return poller


def run_realtime(c: Compositor) -> int:
    """Every frame out at once with the newest mask; the newest frame goes to an idle worker."""
    poller = _poller(c)
    pending: Frame | None = None  # newest frame not yet handed to a worker
    while not c.rt.stopping():
        poller.poll(100)
        c.handle_workers(c.accept)
        c.housekeeping()
        frame, ended = c.read_frames()
        if frame is not None:
            c.stats.count("frames_received")
            c.composite_and_send(frame, blocking=False)
            pending = frame
        if pending is not None and not c.paced() and c.dispatch(pending):
            pending = None
        c.stats.tick(c.status())
        if ended:
            c.send_end()
            c.rt.log.info("source ended")
            return 0
    return 0


def run_lockstep(c: Compositor) -> int:
    """One frame at a time: wait for its own mask, composite, send (waiting for the display)."""
    poller = _poller(c, with_frames=False)
    frames_poller = _poller(c)
    current: Frame | None = None
    assigned = False
    done: list[protocol.Message] = []

    def on_mask(msg: protocol.Message, guide: Frame | None, name: str) -> None:
        if current is not None and msg.header["frame_id"] == current.id:
            done.append(msg)
            c.accept(msg, guide or current, name)
        else:
            c.stats.count("masks_stale")

    while not c.rt.stopping():
        (frames_poller if current is None else poller).poll(100)
        c.housekeeping()
        c.handle_workers(on_mask)
        if current is not None and done:
            c.composite_and_send(current, blocking=True)
            current, assigned, done = None, False, []
        if current is None:
            parts = sockets.recv_parts(c.links.frames_in)
            if parts is not None:
                msg = sockets.decode_or_count(parts, c.bad, time.time())
                if msg is not None and msg.kind == protocol.END:
                    c.send_end()
                    c.rt.log.info("source ended")
                    return 0
                if (
                    msg is not None
                    and msg.kind == protocol.FRAME
                    and msg.image is not None
                    and msg.image.ndim == 3
                ):
                    current = Frame(msg.header, msg.image)
                    c.stats.count("frames_received")
        if current is not None and not (assigned and c.pool.busy_with(current.id)):
            # not yet handed out, or its worker timed out: (re)dispatch
            assigned = c.dispatch(current)
        c.stats.tick(c.status())
    return 0

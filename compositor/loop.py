"""The compositor's loops: they only move messages between the sockets (``links.Links``) and the
parts that decide (``core.Core``).

Real time: every frame is composited at once with the newest mask and sent without waiting (a
slow display drops frames, never queues them); the newest frame nobody works on goes to the next
idle worker. Lock-step (offline): one frame at a time, handed out, composited with its own mask
once that arrives, sent waiting for the display; nothing is dropped or reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from common import protocol, sockets
from common.runtime import Runtime
from compositor.core import Core
from compositor.links import Links

POLL_MS = 100
END_TIMEOUT_S = 5.0

OnMask = Callable[[bytes, protocol.Mask, int], None]


def service(core: Core, links: Links, on_mask: OnMask) -> None:
    """All but frames: worker messages, worker expiry, heartbeats, key commands, refused peers."""
    wall = time.time()
    for m in links.from_workers(core.bad, wall):
        if isinstance(m.msg, protocol.Ready):
            core.on_ready(m.identity, m.msg)
        else:
            on_mask(m.identity, m.msg, m.nbytes)
    core.expire_workers()
    heartbeat = None
    for identity in core.dispatcher.heartbeats_due(core.clock()):
        heartbeat = heartbeat or protocol.encode(protocol.Heartbeat())
        if not links.to_worker(identity, heartbeat):
            core.worker_lost(identity)
    for msg in links.controls(core.bad, wall):
        core.on_control(msg)
    core.report_privacy()
    for endpoint in links.refused_peers():
        core.refused(endpoint)


def hand_out(core: Core, links: Links, frame: protocol.Frame, *, pace: bool) -> bool:
    """Send ``frame`` to the longest-idle worker; False if none may get it now."""
    parts, nbytes = None, 0
    while (identity := core.dispatcher.next_worker(core.clock(), pace=pace)) is not None:
        if parts is None:
            parts, nbytes = links.encode_for_workers(frame)
        if links.to_worker(identity, parts):
            core.handed(identity, frame, nbytes)
            return True
        core.worker_lost(identity)  # vanished or flooded worker: forget it, try the next one
    return False


def send_output(
    core: Core, links: Links, frame: protocol.Frame, blocking: bool, rt: Runtime
) -> bool:
    """Composite ``frame`` (or hide it) and send it to the display."""
    out, alpha = core.picture.composite(frame, core.privacy.on)
    # the mask rate for the window's stats overlay; the alpha only while its mask view is on
    mask_fps = round(core.mask_rate(), 2)
    out = replace(out, mask_fps=mask_fps, alpha=alpha if core.mask_view else None)
    sent = links.send_out(out, blocking, rt.stopping)
    if sent:
        core.shown(out)
        core.picture.saved(frame, alpha)
    else:
        core.stats.count("frames_dropped")
    return sent


def send_end(core: Core, links: Links, end: protocol.End, rt: Runtime) -> None:
    """Pass capture's End on to the display (waiting at most ``END_TIMEOUT_S``)."""
    deadline = time.monotonic() + END_TIMEOUT_S
    links.send_out(end, True, lambda: rt.stopping() or time.monotonic() > deadline)
    core.log.info("source ended")


def run_realtime(core: Core, links: Links, rt: Runtime) -> int:
    """Every frame out at once with the newest mask; the newest frame goes to an idle worker."""
    poller = links.poller()
    pending: protocol.Frame | None = None  # newest frame not yet handed to a worker

    def on_mask(identity: bytes, msg: protocol.Mask, nbytes: int) -> None:
        rec = core.on_mask(identity, msg, nbytes)
        if rec is not None:
            core.apply(rec, msg, identity)

    while not rt.stopping():
        poller.poll(POLL_MS)
        service(core, links, on_mask)
        got = sockets.recv_newest(links.frames_in, core.bad, protocol.Frame, (protocol.End,))
        if got.older:
            core.stats.count("frames_dropped", got.older)
        if got.message is not None:
            core.stats.count("frames_received")
            send_output(core, links, got.message, False, rt)
            pending = got.message
        if pending is not None and hand_out(core, links, pending, pace=True):
            pending = None
        core.stats.tick(core.status())
        ends = [m for m in got.others if isinstance(m, protocol.End)]
        if ends:
            send_end(core, links, ends[-1], rt)
            return 0
    return 0


def next_frame(core: Core, links: Links) -> protocol.Frame | protocol.End | None:
    """One message from capture without draining (lock-step loses nothing)."""
    parts = sockets.recv_parts(links.frames_in)
    if parts is None:
        return None
    expect = (protocol.Frame, protocol.End)
    return sockets.decode_or_count(parts, core.bad, time.time(), expect)  # type: ignore[return-value]


def run_lockstep(core: Core, links: Links, rt: Runtime) -> int:
    """One frame at a time: wait for its own mask, composite, send (waiting for the display)."""
    waiting, reading = links.poller(with_frames=False), links.poller()
    current: protocol.Frame | None = None
    assigned = done = False

    def on_mask(identity: bytes, msg: protocol.Mask, nbytes: int) -> None:
        nonlocal done
        rec = core.on_mask(identity, msg, nbytes)
        if rec is None:
            return
        if current is not None and (rec.frame.frame_id, rec.frame.stream) == (
            current.frame_id,
            current.stream,
        ):
            core.apply(rec, msg, identity)
            done = True
        else:
            core.stats.count("masks_stale")

    while not rt.stopping():
        (reading if current is None else waiting).poll(POLL_MS)
        service(core, links, on_mask)
        if current is not None and done:
            send_output(core, links, current, True, rt)
            current, assigned, done = None, False, False
        if current is None:
            msg = next_frame(core, links)
            if isinstance(msg, protocol.End):
                send_end(core, links, msg, rt)
                return 0
            if msg is not None:
                current = msg
                core.stats.count("frames_received")
        if current is not None and not (assigned and core.dispatcher.holds(current.frame_id)):
            # not yet handed out, or its worker timed out: (re)hand it out
            assigned = hand_out(core, links, current, pace=False)
        core.stats.tick(core.status())
    return 0

"""The worker's state between messages: what to answer, when to rest, when the compositor is lost.

The worker *asks* (ZeroMQ Guide load-balancing pattern): it sends READY, the compositor answers with
the newest frame nobody is working on, the worker replies with the mask, which also says "ready
again". So each worker has at most one frame in flight and no queue can grow, however slow the
model. While idle it gets a heartbeat every second and answers it with READY. If the compositor
goes silent while the worker waits for an answer (restarted, network gone), the worker opens a new
socket and says READY again (Lazy Pirate), so it rejoins a restarted compositor by itself.
``--mask-interval``: see ``inference.pacing``.

Sockets (``Link``), the model thread (``Forward``) and the clock are passed in; ``step`` is one
turn of the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from common import protocol, sockets
from common.stats import Stats
from inference.forward import Forward
from inference.link import Link
from inference.pacing import MaskPacer


@dataclass(frozen=True)
class Identity:
    name: str
    model: str
    remote: bool  # masks travel as PNG off loopback


class Worker:
    """One worker's loop state; ``step()`` waits for at most ~100 ms."""

    def __init__(
        self,
        me: Identity,
        link: Link,
        forward: Forward,
        stats: Stats,
        pacer: MaskPacer,
        liveness: float,
        stopping: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.me, self.link, self.forward, self.stats = me, link, forward, stats
        self.pacer, self.liveness, self.stopping, self.clock = pacer, liveness, stopping, clock
        self.log = logging.getLogger("inference")
        self.bad = sockets.BadMessages()
        self.ready_parts = protocol.encode(protocol.Ready(worker=me.name, model=me.model))
        self.awaiting_since: float | None = None  # a sent READY/mask the compositor must answer
        self.last_ms: float | None = None

    def start(self) -> None:
        self.link.open()
        self.say_ready(self.clock())

    def say_ready(self, now: float) -> None:
        self.pacer.said(now)
        self._sent(self.link.send(self.ready_parts), now, expect_answer=True)

    def _sent(self, ok: bool, now: float, expect_answer: bool) -> None:
        if not ok:  # the compositor is not taking messages: reconnect at the next quiet turn
            self.awaiting_since = -float("inf")
        elif expect_answer and self.awaiting_since is None:
            self.awaiting_since = now

    def step(self) -> bool:
        """One turn: READY if due, wait for a message, handle it; False if stopped mid-forward."""
        now = self.clock()
        if self.pacer.ready_due(now):
            self.say_ready(now)
        batch = self.link.recv(self.pacer.wait_s(now))
        now = self.clock()
        if not batch:
            self.on_quiet(now)
            return True
        self.awaiting_since = None
        # Only the newest frame is answered: the compositor can hand one over while the worker's
        # READY (answering a heartbeat) is on its way, and a worker that answered every frame in
        # turn would keep that backlog forever, each mask for a frame the compositor has long
        # forgotten (seen: a remote worker sending 24 masks/s, all rejected as not handed out).
        # The mask for the newest frame settles the compositor's records of the older ones.
        got = sockets.keep_newest(batch, self.bad, protocol.Frame, (protocol.Heartbeat,))
        self.stats.count("frames_skipped", got.older)
        if got.message is not None:
            return self.on_frame(got.message, now)
        if got.others:  # heartbeats only
            self.say_ready(now)  # also while resting: it is what keeps the link alive
        return True

    def on_quiet(self, now: float) -> None:
        if self.awaiting_since is not None and now - self.awaiting_since > self.liveness:
            self.log.warning("compositor silent for %.1f s, reconnecting", self.liveness)
            self.stats.count("reconnects")
            self.link.reopen(now)
            self.awaiting_since = None
            self.say_ready(now)

    def on_frame(self, frame: protocol.Frame, now: float) -> bool:
        if self.pacer.resting:
            # Handed over because the mask said "idle"; stale by the end of the rest. The READY
            # that ends the rest fetches the newest frame instead.
            self.stats.count("frames_declined")
            return True
        self.stats.count("frames_received")
        result = self.forward.run(frame.image, self.stopping)
        if result is None:  # asked to stop mid-forward
            return False
        if isinstance(result, Exception):
            self.log.error("model failed on frame %s: %s", frame.frame_id, result)
            self.stats.count("errors")
            self.say_ready(self.clock())
            return True
        self.send_mask(frame, result.wire_mask(frame.image.shape), now)
        return True

    def send_mask(self, frame: protocol.Frame, mask, started: float) -> None:
        now = self.clock()
        ms = (now - started) * 1000
        self.last_ms = ms
        self.stats.sample("infer_ms", ms)
        self.stats.count("masks_sent")
        reply = protocol.Mask(
            frame_id=frame.frame_id,
            stream=frame.stream,
            worker=self.me.name,
            infer_ms=round(ms, 1),
            image=mask,
        )
        ok = self.link.send(protocol.encode(reply, enc="png" if self.me.remote else "raw"))
        self.pacer.mask_sent(started, now)
        # Not resting: the mask asks for the next frame. Resting: nothing is awaited until READY.
        self._sent(ok, now, expect_answer=not self.pacer.resting)

    def status(self) -> str:
        last = f"{self.last_ms:.0f} ms" if self.last_ms is not None else "-"
        s = self.stats
        return (
            f"{s.recent_rate('masks_sent'):.2f} masks/s, last forward {last}, "
            f"{s.counts['masks_sent']} sent, {s.counts['reconnects']} reconnects"
        )

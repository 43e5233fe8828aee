"""``--mask-interval S``: at most one mask every S seconds, resting in between (pure timing rule).

Why a rest and not a sleep before replying: the mask is sent the moment it is computed, so it is
as fresh as the model allows; only the *next* request for work waits. In this protocol the mask
itself also tells the compositor "idle again", so it may hand the resting worker a frame at once.
The worker declines that frame (drops it unsegmented: it would be stale by the time the rest is
over) and, when the rest is over, says READY, which the compositor answers with the newest frame
(in lock-step mode: the same frame again, so no frame is lost). To the compositor a resting worker
looks busy with the declined frame, or idle; both are consistent with its bookkeeping:

* busy: its ``--worker-timeout`` (15 s) applies, so during a long rest the worker says READY every
  ``keepalive`` seconds (and declines what that brings), and the compositor's answer doubles as
  the heartbeat that tells the worker the link is alive;
* idle (no frame was pending): the compositor's heartbeats come every second and are answered
  with READY as always.

The rest is counted from the *start* of the forward pass: a 2 s Mask R-CNN pass with S = 3 rests
1 s; with S below the model's own time there is no rest at all. Times are plain numbers from an
injected clock, so the rule is unit-tested without sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class MaskPacer:
    """When a worker may ask for work again; ``interval`` 0 means at once (no resting)."""

    interval: float = 0.0
    keepalive: float = 5.0  # longest silence towards the compositor while resting
    rest_until: float = -math.inf
    resting: bool = False  # a mask went out and the READY that ends the rest has not
    last_said: float = -math.inf  # when the worker last sent anything

    def mask_sent(self, started: float, now: float) -> None:
        """A mask whose forward pass began at ``started`` was sent at ``now``."""
        self.last_said = now
        self.rest_until = started + self.interval
        self.resting = self.rest_until > now

    def said(self, now: float) -> None:
        """The worker sent READY (answering a heartbeat, ending a rest, or keeping alive)."""
        self.last_said = now
        if now >= self.rest_until:
            self.resting = False

    def ready_due(self, now: float) -> bool:
        """True when the worker should say READY now: the rest is over, or a keep-alive is due."""
        if not self.resting:
            return False
        return now >= self.rest_until or now - self.last_said >= self.keepalive

    def wait_s(self, now: float, cap: float = 0.1) -> float:
        """How long the loop may wait for a message before ``ready_due`` can change."""
        if not self.resting:
            return cap
        next_event = min(self.rest_until, self.last_said + self.keepalive)
        return max(0.0, min(cap, next_event - now))

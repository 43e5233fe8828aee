"""Stage statistics: counters, rates and latency percentiles, logged every few seconds.

Every stage reports what it does (rates, latencies, mask age, drops) in one status line every
``log_every`` seconds (5 by default: a line a second per stage drowned everything else; 1 with a
stage's ``--verbose``), and with ``--stats-json FILE`` the same numbers as JSON, rewritten
atomically every second and at exit, so a launcher, test or benchmark can read them without
parsing logs. Sample series are bounded: the most recent ``MAX_SAMPLES`` values of each.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_SAMPLES = 10_000  # per series: percentiles of the most recent ones (~5 min at 30/s)
# The JSON file, 4 times a second: the launcher, tests and benchmarks wait on its counters, and a
# once-a-second file made every such wait up to a second late. Its percentiles are recomputed
# only once a second: they move slowly, and over 10,000 samples they cost ~1 ms per series.
SAVE_EVERY_S = 0.25
PERCENTILES_EVERY_S = 1.0
LOG_EVERY_S = 5.0  # the status line


def _series() -> deque[float]:
    return deque(maxlen=MAX_SAMPLES)


def percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    """{"p50", "p95"} of the samples, None if there are none (JSON null: "not measured")."""
    if not samples:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(np.fromiter(samples, np.float64, len(samples)), [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


class Stats:
    """Counters and sample series of one stage; ``tick()`` saves the JSON every ``SAVE_EVERY_S``
    and logs the status line every ``log_every`` seconds."""

    def __init__(
        self,
        stage: str,
        log: logging.Logger,
        path: Path | None = None,
        log_every: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.log = log
        self.path = path
        self.log_every = log_every
        self.clock = clock
        self.counts: dict[str, int] = defaultdict(int)
        self.series: dict[str, deque[float]] = defaultdict(_series)
        # Derived values (rates, per-worker tables) computed only when a snapshot is taken.
        self.live: Callable[[], dict[str, Any]] | None = None
        self.started = self.clock()
        self._last_tick = self.started  # last status line (rates in it are since then)
        self._last_save = self.started
        self._percentiles: dict[str, dict[str, float | None]] = {}
        self._percentiles_at = -float("inf")
        self._last_counts: dict[str, int] = {}
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def count(self, name: str, n: int = 1) -> None:
        now = self.clock()
        self._first.setdefault(name, now)
        self._last[name] = now
        self.counts[name] += n

    def sample(self, name: str, value: float) -> None:
        self.series[name].append(value)  # a bounded deque: the oldest sample falls out

    def rate(self, name: str) -> float:
        """Events per second between the first and last event.

        0 until there are at least two events over half a second: a rate from two events a few
        milliseconds apart is noise, not a measurement.
        """
        n = self.counts.get(name, 0)
        span = self._last.get(name, 0.0) - self._first.get(name, 0.0)
        return (n - 1) / span if n > 1 and span >= 0.5 else 0.0

    def tick(self, status: str | None = None, force: bool = False) -> bool:
        """Save the JSON every ``SAVE_EVERY_S``; log the status line every ``log_every`` s.

        Returns True when a status line was logged. ``force``: both now (at exit).
        """
        now = self.clock()
        if force or now - self._last_save >= SAVE_EVERY_S:
            self._last_save = now
            self.save(fresh=force)
        if not force and now - self._last_tick < self.log_every:
            return False
        span = max(now - self._last_tick, 1e-6)
        self._last_tick = now
        if status is None:
            recent = {
                k: (v - self._last_counts.get(k, 0)) / span for k, v in sorted(self.counts.items())
            }
            status = ", ".join(f"{k} {v:.1f}/s" for k, v in recent.items())
        self._last_counts = dict(self.counts)
        self.log.info("%s", status)
        return True

    def recent_rate(self, name: str) -> float:
        """Per-second rate of ``name`` since the last status line (for status lines)."""
        span = max(self.clock() - self._last_tick, 1e-6)
        return (self.counts.get(name, 0) - self._last_counts.get(name, 0)) / span

    def snapshot(self, fresh: bool = True) -> dict[str, Any]:
        """Counters as they are now; percentiles recomputed if ``fresh`` or a second old."""
        now = self.clock()
        out: dict[str, Any] = {"stage": self.stage, "uptime_s": round(now - self.started, 2)}
        out.update(self.counts)
        if fresh or now - self._percentiles_at >= PERCENTILES_EVERY_S:
            self._percentiles_at = now
            self._percentiles = {k: percentiles(v) for k, v in self.series.items()}
        out.update(self._percentiles)
        if self.live is not None:
            out.update(self.live())
        return out

    def save(self, fresh: bool = True) -> None:
        """Atomic write (temp + rename) so a reader never sees half a file."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(fresh), indent=1, sort_keys=True))
        os.replace(tmp, self.path)

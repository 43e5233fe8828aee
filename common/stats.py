"""Stage statistics: counters, rates and latency percentiles, logged once a second.

Every stage reports what it does (rates, latencies, mask age, drops) in one status line a second,
and with ``--stats-json FILE`` the same numbers as JSON (rewritten atomically every second and at
exit), so a launcher, test or benchmark can read them without parsing logs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MAX_SAMPLES = 100_000  # per series; a long run keeps the most recent ones


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """{"p50", "p95"} of the samples, None if there are none (JSON null: "not measured")."""
    if not samples:
        return {"p50": None, "p95": None}
    arr = np.asarray(samples, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(arr, 50)), 2),
        "p95": round(float(np.percentile(arr, 95)), 2),
    }


class Stats:
    """Counters and sample series of one stage; ``tick()`` logs a line a second and saves JSON."""

    def __init__(self, stage: str, log: logging.Logger, path: Path | None = None) -> None:
        self.stage = stage
        self.log = log
        self.path = path
        self.counts: dict[str, int] = defaultdict(int)
        self.series: dict[str, list[float]] = defaultdict(list)
        # Derived values (rates, per-worker tables) computed only when a snapshot is taken.
        self.live: Callable[[], dict[str, Any]] | None = None
        self.started = time.monotonic()
        self._last_tick = self.started
        self._last_counts: dict[str, int] = {}
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def count(self, name: str, n: int = 1) -> None:
        now = time.monotonic()
        self._first.setdefault(name, now)
        self._last[name] = now
        self.counts[name] += n

    def sample(self, name: str, value: float) -> None:
        series = self.series[name]
        if len(series) >= MAX_SAMPLES:
            del series[: MAX_SAMPLES // 10]
        series.append(value)

    def rate(self, name: str) -> float:
        """Events per second between the first and last event.

        0 until there are at least two events over half a second: a rate from two events a few
        milliseconds apart is noise, not a measurement.
        """
        n = self.counts.get(name, 0)
        span = self._last.get(name, 0.0) - self._first.get(name, 0.0)
        return (n - 1) / span if n > 1 and span >= 0.5 else 0.0

    def tick(self, status: str | None = None, force: bool = False) -> bool:
        """Once a second: log the status line (rates since the last tick) and save the JSON."""
        now = time.monotonic()
        if not force and now - self._last_tick < 1.0:
            return False
        span = now - self._last_tick
        self._last_tick = now
        if status is None:
            recent = {
                k: (v - self._last_counts.get(k, 0)) / span for k, v in sorted(self.counts.items())
            }
            status = ", ".join(f"{k} {v:.1f}/s" for k, v in recent.items())
        self._last_counts = dict(self.counts)
        self.log.info("%s", status)
        self.save()
        return True

    def recent_rate(self, name: str) -> float:
        """Per-second rate of ``name`` since the last tick (for status lines)."""
        span = max(time.monotonic() - self._last_tick, 1e-6)
        return (self.counts.get(name, 0) - self._last_counts.get(name, 0)) / span

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.stage,
            "uptime_s": round(time.monotonic() - self.started, 2),
        }
        out.update(self.counts)
        for name, series in self.series.items():
            out[name] = percentiles(series)
        if self.live is not None:
            out.update(self.live())
        return out

    def save(self) -> None:
        """Atomic write (temp + rename) so a reader never sees half a file."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1, sort_keys=True))
        os.replace(tmp, self.path)

"""Stats: JSON 4 times a second, a status line every 5 s (1 s verbose), bounded series, same API."""

import json
import logging

from common import stats as stats_mod
from common.stats import Stats, percentiles


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path, caplog, **kw):
    clock = Clock()
    log = logging.getLogger("test-stats")
    caplog.set_level(logging.INFO, logger="test-stats")
    return Stats("s", log, tmp_path / "s.json", clock=clock, **kw), clock


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "test-stats"]


def test_json_four_times_a_second_status_line_every_five(tmp_path, caplog):
    s, clock = make(tmp_path, caplog)
    saves, logged = [], 0
    for _ in range(100):  # 10 s in steps of 0.1 s
        clock.t += 0.1
        s.count("frames")
        logged += s.tick("status")
        path = tmp_path / "s.json"
        saves.append(json.loads(path.read_text())["frames"] if path.exists() else None)
    assert len(lines(caplog)) == 2 == logged  # at 5 s and 10 s; tick says when it logged
    assert len({v for v in saves if v is not None}) >= 33  # the file followed 4 times a second


def test_percentiles_in_the_file_are_refreshed_once_a_second(tmp_path, caplog):
    s, clock = make(tmp_path, caplog)
    path = tmp_path / "s.json"
    s.sample("latency_ms", 10.0)
    clock.t += 0.3
    s.tick()
    assert json.loads(path.read_text())["latency_ms"]["p50"] == 10.0
    s.sample("latency_ms", 30.0)
    clock.t += 0.3
    s.count("frames")
    s.tick()
    saved = json.loads(path.read_text())
    assert saved["frames"] == 1 and saved["latency_ms"]["p50"] == 10.0  # counters fresh
    clock.t += 0.8
    s.tick()
    assert json.loads(path.read_text())["latency_ms"]["p50"] == 20.0  # a second later: new
    s.sample("latency_ms", 50.0)
    s.tick(force=True)  # at exit: everything fresh
    assert json.loads(path.read_text())["latency_ms"]["p50"] == 30.0


def test_verbose_logs_every_second(tmp_path, caplog):
    s, clock = make(tmp_path, caplog, log_every=1.0)
    for _ in range(50):
        clock.t += 0.1
        s.tick("status")
    assert len(lines(caplog)) == 5


def test_force_logs_and_saves_at_once(tmp_path, caplog):
    s, clock = make(tmp_path, caplog)
    s.count("x", 3)
    assert s.tick(force=True)
    assert len(lines(caplog)) == 1 and lines(caplog)[0].startswith("x ")
    assert json.loads((tmp_path / "s.json").read_text())["x"] == 3


def test_recent_rate_is_over_the_status_line_period(tmp_path, caplog):
    s, clock = make(tmp_path, caplog)
    s.tick(force=True)
    for _ in range(50):
        clock.t += 0.1
        s.count("masks")
        s.tick("status")
    # a line at 5.0 s reset the window; 0 events since
    assert s.recent_rate("masks") == 0.0
    clock.t += 1.0
    s.count("masks", 2)
    assert abs(s.recent_rate("masks") - 2.0) < 1e-6


def test_series_are_bounded_and_keep_the_newest(tmp_path, caplog):
    s, _ = make(tmp_path, caplog)
    n = stats_mod.MAX_SAMPLES
    for i in range(n + 500):
        s.sample("ms", float(i))
    series = s.series["ms"]
    assert len(series) == n and series[-1] == n + 499 and series[0] == 500
    assert s.snapshot()["ms"]["p50"] > 500
    assert s.series.get("nothing") is None  # .get does not create series (status lines use it)


def test_api_kept(tmp_path, caplog):
    s, clock = make(tmp_path, caplog)
    s.live = lambda: {"derived": 1}
    s.count("a")
    clock.t += 1.0
    s.count("a")
    assert s.rate("a") == 1.0 and s.counts["a"] == 2
    snap = s.snapshot()
    assert snap["derived"] == 1 and snap["stage"] == "s" and snap["a"] == 2
    s.save()
    assert json.loads((tmp_path / "s.json").read_text())["a"] == 2
    assert percentiles([]) == {"p50": None, "p95": None}
    assert Stats("plain", logging.getLogger("x")).path is None  # old positional signature

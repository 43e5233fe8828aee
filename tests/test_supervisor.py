"""The supervisor's rules with fake processes and a fake clock (milliseconds, no timing), plus one
smoke test with real child processes."""

import os
import queue
import signal
import sys
import time

import pytest

import launch
from launch import Rules, Stage, Supervisor

RULES = Rules(grace=5.0, drain=20.0, restart_delay=0.5, crash_limit=5, crash_window=60.0)


class FakeProc:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def terminate(self):
        self.signals.append("TERM")

    def kill(self):
        self.signals.append("KILL")


class Harness:
    """A Supervisor over fake processes: ``spawned[name]`` lists each start of a stage."""

    def __init__(self, *stages, rules=RULES):
        self.now = 0.0
        self.spawned = {}
        self.lines = []
        self.sup = Supervisor(stages, self.spawn, lambda: self.now, rules, self.lines.append)
        self.sup.start()

    def spawn(self, stage):
        proc = FakeProc(1000 + sum(map(len, self.spawned.values())))
        self.spawned.setdefault(stage.name, []).append(proc)
        return proc

    def proc(self, name):
        return self.spawned[name][-1]

    def at(self, t):
        self.now = t
        self.sup.tick()

    def exit(self, name, rc, t=None):
        if t is not None:
            self.now = t
        self.sup.exited(name, rc)
        self.sup.tick()

    def exit_all_signalled(self):
        for name in sorted(self.sup.running):
            if self.proc(name).signals:
                self.exit(name, -15)

    def signalled(self, names):
        return {n for n in names if self.proc(n).signals}


def pipeline(**kw):
    stages = [
        Stage("capture", ["c"], restart=True),
        Stage("compositor", ["m"], restart=True),
        Stage("inference", ["i"], restart=True),
        Stage("display", ["d"], ends_pipeline=True),
    ]
    return Harness(*stages, **kw)


ALL = ("capture", "compositor", "inference", "display")


def test_display_ending_stops_everything_with_zero():
    h = pipeline()
    h.exit("display", 0, t=3.0)
    assert h.signalled(ALL) == {"capture", "compositor", "inference"}
    assert all(h.proc(n).signals == ["TERM"] for n in ("capture", "compositor", "inference"))
    h.exit_all_signalled()
    assert h.sup.done and h.sup.exit_code == 0


def test_a_failing_stage_stops_everything_with_its_code():
    h = pipeline()
    h.exit("display", 3, t=1.0)
    assert h.signalled(ALL) == {"capture", "compositor", "inference"}
    h.exit_all_signalled()
    assert h.sup.done and h.sup.exit_code == 3 and h.sup.failed == "display"


def test_killed_by_a_signal_is_reported_as_128_plus_the_signal():
    h = pipeline()
    h.exit("display", -signal.SIGKILL)
    h.exit_all_signalled()
    assert h.sup.exit_code == 128 + signal.SIGKILL


def test_file_source_finishing_lets_the_display_drain_then_stops():
    h = pipeline()
    h.exit("capture", 0, t=10.0)
    h.at(10.0 + RULES.drain - 0.01)
    assert not h.signalled(ALL[1:])  # the display is still showing the rest
    h.exit("display", 0, t=12.0)  # ... and ends by itself
    assert h.signalled(ALL[1:]) == {"compositor", "inference"}
    h.exit_all_signalled()
    assert h.sup.exit_code == 0


def test_drain_has_a_limit():
    h = pipeline()
    h.exit("capture", 0, t=10.0)
    h.at(10.0 + RULES.drain)
    assert h.signalled(ALL[1:]) == {"compositor", "inference", "display"}
    h.exit_all_signalled()
    assert h.sup.done and h.sup.exit_code == 0


def test_stage_ignoring_sigterm_is_killed_after_the_grace_period():
    h = pipeline()
    h.exit("display", 0, t=1.0)
    for name in ("capture", "inference"):
        h.exit(name, -15)
    h.at(1.0 + RULES.grace - 0.01)
    assert h.proc("compositor").signals == ["TERM"]
    h.at(1.0 + RULES.grace)
    assert h.proc("compositor").signals == ["TERM", "KILL"]
    assert any("compositor did not stop" in line for line in h.lines)
    h.exit("compositor", -9)
    assert h.sup.done and h.sup.exit_code == 0  # the display's end decided, not the kill


@pytest.mark.parametrize("name", ["inference", "compositor", "capture"])
def test_a_crashed_stage_is_restarted_after_a_short_delay(name):
    h = pipeline()
    h.exit(name, -signal.SIGKILL, t=5.0)
    h.at(5.0 + RULES.restart_delay - 0.01)
    assert len(h.spawned[name]) == 1
    h.at(5.0 + RULES.restart_delay)
    assert len(h.spawned[name]) == 2  # started again
    assert not h.signalled(ALL) and not h.sup.done
    assert name in h.sup.running


def test_configuration_error_is_fatal_even_for_a_restartable_stage():
    h = pipeline()
    h.exit("compositor", 2, t=0.4)
    h.at(5.0)
    assert len(h.spawned["compositor"]) == 1
    assert h.signalled(ALL) == {"capture", "inference", "display"}
    h.exit_all_signalled()
    assert h.sup.exit_code == 2 and h.sup.failed == "compositor"


def test_a_stage_crashing_repeatedly_ends_the_pipeline_with_its_code():
    h = pipeline()
    t = 0.0
    for _ in range(RULES.crash_limit - 1):  # four crashes within the window: restarted each time
        h.exit("compositor", 1, t=t)
        h.at(t + RULES.restart_delay)
        t += 10.0
    assert len(h.spawned["compositor"]) == RULES.crash_limit
    h.exit("compositor", 1, t=t)  # the fifth within 60 s
    assert h.signalled(ALL) == {"capture", "inference", "display"}
    h.exit_all_signalled()
    assert h.sup.done and h.sup.exit_code == 1


def test_crashes_spread_over_more_than_the_window_are_restarted():
    h = pipeline()
    for i in range(RULES.crash_limit + 3):
        t = i * (RULES.crash_window / (RULES.crash_limit - 1) + 1)
        h.exit("inference", 1, t=t)
        h.at(t + RULES.restart_delay)
    assert len(h.spawned["inference"]) == RULES.crash_limit + 4
    assert not h.signalled(ALL)


def test_a_signal_stops_everything():
    h = pipeline()
    h.sup.signalled(signal.SIGTERM)
    h.at(0.0)
    assert h.signalled(ALL) == set(ALL)
    h.exit_all_signalled()
    assert h.sup.done and h.sup.exit_code == 128 + signal.SIGTERM


def test_no_restart_once_stopping():
    h = pipeline()
    h.exit("inference", 1, t=1.0)  # restart due at 1.5 ...
    h.exit("display", 0, t=1.2)  # ... but the call ended first
    h.at(2.0)
    assert len(h.spawned["inference"]) == 1
    h.exit_all_signalled()
    assert h.sup.done


def test_first_reason_decides_the_exit_code():
    h = pipeline()
    h.exit("capture", 2, t=1.0)
    h.exit("display", 1, t=1.0)  # a consequence, during shutdown
    h.exit_all_signalled()
    assert h.sup.exit_code == 2


# ------------------------------------------------------------ real processes


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead for our purposes
        return f.read().split()[2] != "Z"


def test_smoke_real_processes(capsys):
    """Real children: prefixed lines, a SIGTERM-ignoring stage killed after the grace period,
    a crashed restartable stage started again, the failing stage's error line reported."""
    py = sys.executable
    stubborn = (
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('pid', os.getpid(), flush=True)\nwhile True: time.sleep(0.05)"
    )
    crash_once = "import os, sys, time\nprint('run', flush=True)\nsys.exit(1)"
    display = (
        "import sys, time\nprint('hello from display', flush=True)\ntime.sleep(1.5)\n"
        "print('display: error: no picture', file=sys.stderr, flush=True)\nsys.exit(3)"
    )
    t0 = time.monotonic()
    code, error = launch.supervise(
        [
            Stage("stubborn", [py, "-c", stubborn]),
            Stage("worker", [py, "-c", crash_once], restart=True),
            Stage("display", [py, "-c", display], ends_pipeline=True),
        ],
        Rules(grace=1.0, restart_delay=0.1, crash_limit=1000),
    )
    elapsed = time.monotonic() - t0
    out = capsys.readouterr().out
    assert code == 3 and error == "display: error: no picture"
    assert "display | hello from display" in out
    assert out.count("worker | run") >= 2  # crashed and was started again
    assert "stubborn did not stop in 1 s, killing it" in out
    assert not alive(int(out.split("stubborn | pid ")[1].split()[0]))
    assert 1.5 <= elapsed < 30


def test_a_stage_that_exits_at_once_is_never_lost():
    """The exit of a stage that ends before the launcher has registered it (a bad flag on a
    loaded machine) still reaches the supervisor. The registration is slowed on purpose, as a
    descheduled launcher thread would be; before the fix the exit was dropped and the launcher
    waited forever (seen under load in ``test_smoke_real_processes``)."""

    class SlowSet(set):
        def add(self, pid):
            time.sleep(0.5)
            super().add(pid)

    events = queue.SimpleQueue()
    spawner = launch.Spawner(events, 5)
    spawner.active = SlowSet()
    spawner(Stage("quick", [sys.executable, "-c", "import sys; sys.exit(4)"]))
    assert events.get(timeout=15) == ("exit", "quick", 4)

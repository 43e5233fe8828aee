"""launch.supervise with real child processes: who stops whom, exit codes, no orphans."""

import os
import sys
import time

import launch

PY = sys.executable


def stage(name, code, restart=False):
    return launch.Stage(name, [PY, "-c", code], restart)


SLEEPER = "import time\nwhile True: time.sleep(0.05)"
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('pid', __import__('os').getpid(), flush=True)\nwhile True: time.sleep(0.05)"
)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_failing_stage_stops_the_rest_and_sets_the_exit_code():
    t0 = time.monotonic()
    code = launch.supervise(
        [stage("capture", "import sys; sys.exit(2)"), stage("display", SLEEPER)], grace=2
    )
    assert code == 2
    assert time.monotonic() - t0 < 5


def test_display_exit_zero_ends_pipeline_with_zero():
    code = launch.supervise(
        [stage("compositor", SLEEPER), stage("display", "import time; time.sleep(0.3)")], grace=2
    )
    assert code == 0


def test_stage_ignoring_sigterm_is_killed_after_grace(capsys):
    t0 = time.monotonic()
    code = launch.supervise(
        [stage("stubborn", STUBBORN), stage("display", "import time; time.sleep(0.5)")], grace=1
    )
    elapsed = time.monotonic() - t0
    out = capsys.readouterr().out
    pid = int(out.split("pid ")[1].split()[0])
    assert code == 0
    assert "killing it" in out
    assert 1.0 <= elapsed < 6
    assert not alive(pid)


def test_lines_are_prefixed_with_the_stage_name(capsys):
    launch.supervise([stage("display", "print('hello from display')")])
    assert "display | hello from display" in capsys.readouterr().out


def test_crashed_worker_is_restarted_but_config_error_is_fatal(tmp_path, capsys):
    marker = tmp_path / "runs"
    crash_once = (
        f"import pathlib, sys, time\np = pathlib.Path({str(marker)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\np.write_text(str(n + 1))\n"
        "sys.exit(1) if n == 0 else time.sleep(30)"
    )
    code = launch.supervise(
        [
            stage("worker-1", crash_once, restart=True),
            stage("display", "import time; time.sleep(2.5)"),
        ],
        grace=1,
    )
    assert code == 0
    assert marker.read_text() == "2"  # crashed once, restarted once
    assert "restarting it" in capsys.readouterr().out
    code = launch.supervise(
        [stage("worker-1", "import sys; sys.exit(2)", restart=True), stage("display", SLEEPER)],
        grace=1,
    )
    assert code == 2


def test_source_finishing_lets_display_drain_then_stops_all():
    t0 = time.monotonic()
    code = launch.supervise(
        [
            stage("capture", "pass"),
            stage("compositor", SLEEPER),
            stage("display", "import time; time.sleep(1.0)"),
        ],
        grace=1,
        drain=10,
    )
    assert code == 0
    assert time.monotonic() - t0 < 5  # ended by the display, not by the drain timeout


def _compositor_argv(tmp_path, *args):
    a = launch.build_parser().parse_args(["--headless", *args])
    stages = {s.name: s for s in launch.plan(a, tmp_path)}
    return stages["compositor"].command


def test_fail_closed_limit_follows_the_model_unless_given(tmp_path):
    def age(*args):
        argv = _compositor_argv(tmp_path, *args)
        return float(argv[argv.index("--max-mask-age") + 1])

    assert age("--model", "selfie") == 1.0  # a fast model: a second without masks is a dead worker
    assert age("--model", "maskrcnn") == 6.0  # masks are normally seconds old
    assert age("--model", "selfie", "--max-mask-age", "2.5") == 2.5

"""Start and supervise the whole pipeline: ``python launch.py [--source FILE] [--model selfie]``.

Every stage runs as its own process (capture, compositor, N inference workers, display); their log
lines are printed with the stage's name in front. The steps, each its own function:

* ``build_parser``: the flags, derived from the stages' settings dataclasses (``*/config.py``) plus
  the launcher's own few; importing this module loads neither OpenCV nor any model.
* ``check``: the launcher's own values (ports, endpoints), one clear line each.
* ``make_missing_keys``: the key folder for remote workers, created on first use.
* ``links`` and ``plan`` (pure): the endpoints, computed once (private ``ipc://`` sockets by
  default), and each stage's command line as ``to_argv`` of its settings built by keyword.
* ``Supervisor`` (the rules, no I/O) run by ``supervise`` (real processes, signals, the clock).
* ``merge_stats``: one stats JSON for the whole pipeline.

The exit code is 0 for a normal end (``q``, ``--max-frames``, end of file) and otherwise the failing
stage's; its one-line error is the launcher's last line.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from capture.config import CaptureConfig
from common.config import add_arguments, from_namespace, require, to_argv
from common.endpoints import (
    DEFAULT_PORT_BASE,
    Endpoints,
    ipc_supported,
    is_loopback,
    private,
    private_folder,
    tcp,
)
from common.errors import FatalError
from compositor.config import CompositorConfig
from display.config import DisplayConfig
from inference.config import MAX_MASK_AGE_S, WorkerConfig, max_mask_age

CONFIG_ERROR = FatalError.exit_code  # a stage's exit code for bad settings: never restarted

# Stage settings the launcher exposes as its own flags, in --help order. A field named by an earlier
# group (``lockstep``, ``keys``, ``max_frames``) is one flag feeding every stage that has it.
STAGE_FLAGS = (
    ("source", CaptureConfig),
    ("model (inference workers)", WorkerConfig),
    ("look and worker serving (compositor)", CompositorConfig),
    ("display and output", DisplayConfig),
)
# What the launcher computes itself for each stage (links, stats files, names): never a flag.
COMPUTED = {
    CaptureConfig: {"bind", "max_frames", "stats_json", "link_keys"},
    CompositorConfig: {
        "frames",
        "infer_bind",
        "out_bind",
        "control_bind",
        "max_mask_age",
        "stats_json",
        "link_keys",
    },
    DisplayConfig: {"connect", "control", "stats_json", "link_keys"},
    WorkerConfig: {"connect", "name", "keys", "stats_json", "link_keys"},
}
LAUNCHER_FLAGS = {"config", "workers", "infer_bind", "links", "port_base", "max_mask_age"}
LAUNCHER_FLAGS |= {"stats_json"}


# ---------------------------------------------------------------- flags


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python launch.py",
        description="Video-call privacy mode: keep the person sharp, hide the room. "
        "Starts capture, inference, compositor and display; 'p' toggles privacy, 'q' quits.",
    )
    declared = set(LAUNCHER_FLAGS)
    for title, cls in STAGE_FLAGS:
        skip = COMPUTED[cls] | declared
        add_arguments(p.add_argument_group(title), cls, skip=skip)
        declared |= {f.name for f in fields(cls) if f.metadata.get("cli")} - skip
    _add_launcher_arguments(p.add_argument_group("launcher"))
    return p


def _add_launcher_arguments(g: Any) -> None:
    ages = ", ".join(f"{m} {s:g} s" for m, s in sorted(MAX_MASK_AGE_S.items()))
    g.add_argument(
        "--max-mask-age",
        type=float,
        default=None,
        help="older masks are not trusted: the whole picture is hidden "
        f"(default per model: {ages})",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local inference workers, 0 = remote only (default: 1)",
    )
    g.add_argument(
        "--infer-bind",
        default=None,
        metavar="tcp://HOST:PORT",
        help="where workers connect, e.g. tcp://0.0.0.0:5551 for remote workers (needs --keys); "
        "default: a private local socket",
    )
    default_links = "ipc" if ipc_supported() else "tcp"
    g.add_argument(
        "--links",
        choices=("ipc", "tcp"),
        default=default_links,
        help="local links: ipc = sockets in a folder only you can open; tcp = loopback ports "
        f"from --port-base, open to every local user (default: {default_links})",
    )
    g.add_argument(
        "--port-base",
        type=int,
        default=DEFAULT_PORT_BASE,
        help=f"first of four loopback ports with --links tcp (default: {DEFAULT_PORT_BASE})",
    )
    g.add_argument("--stats-json", type=Path, default=None, help="write merged stats here at exit")
    g.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE.toml",
        help="settings as 'flag-name = value' lines (TOML); the command line wins",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags from ``--config FILE`` (if any) first, then the command line, which wins."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", type=Path, default=None)
    known, _ = first.parse_known_args(argv)
    if known.config is not None:
        argv = config_argv(parser, known.config) + argv
    return parser.parse_args(argv)


def config_argv(parser: argparse.ArgumentParser, path: Path) -> list[str]:
    """A TOML file of settings as command-line flags, validated by the same parser."""
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"--config {path}: {exc}")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []
    for key, value in table.items():
        action = actions.get(key.replace("-", "_"))
        if action is None or action.dest in ("config", "help"):
            parser.error(f"--config {path}: unknown setting {key!r}")
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            if not isinstance(value, bool):
                parser.error(f"--config {path}: {key} must be true or false")
            argv += [flag] if value != action.default else []
        else:
            argv += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


# ---------------------------------------------------------------- checks, keys, plan


def endpoint_port(flag: str, endpoint: str) -> int:
    """The port of ``tcp://HOST:PORT``, or a one-line FatalError saying what is wrong."""
    example = "e.g. tcp://0.0.0.0:5551"
    parts = urllib.parse.urlsplit(endpoint)
    require(parts.scheme == "tcp", f"{flag} {endpoint!r} must be tcp://HOST:PORT, {example}")
    require(bool(parts.hostname), f"{flag} {endpoint!r} has no host, {example}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    require(
        port is not None and 1 <= port <= 65535,
        f"{flag} {endpoint!r}: the port must be a number in 1..65535, {example}",
    )
    return port  # type: ignore[return-value]


def check(a: argparse.Namespace) -> None:
    """The launcher's own values; each stage's values are checked when its settings are built."""
    require(a.workers >= 0, f"--workers {a.workers} must be >= 0")
    require(
        1024 <= a.port_base <= 65535 - 3,
        f"--port-base {a.port_base} must be in 1024..65532 (it and the next three ports are used)",
    )
    require(a.links == "tcp" or ipc_supported(), "--links ipc needs Unix sockets: use --links tcp")
    if a.infer_bind is not None:
        endpoint_port("--infer-bind", a.infer_bind)
        require(
            is_loopback(a.infer_bind) or a.keys is not None,
            f"--infer-bind {a.infer_bind} is reachable from the network and must be encrypted: "
            "create keys with 'python -m inference keys KEYDIR --worker NAME' and pass --keys "
            "KEYDIR",
        )
    if a.stats_json is not None:
        require(
            a.stats_json.parent.resolve().is_dir(),
            f"--stats-json {a.stats_json}: folder {a.stats_json.parent} does not exist",
        )


def make_missing_keys(a: argparse.Namespace) -> None:
    """First run with a new ``--keys`` folder: make the keys (like ssh-keygen) and say what to copy
    where, so remote inference is two commands; local workers get a key pair of their own."""
    if a.keys is None:
        return
    from common.security import make_keys  # zmq.auth: only when keys are used

    if not (a.keys / "compositor.key_secret").exists():
        bundle = make_keys(a.keys, "remote")
        port = endpoint_port("--infer-bind", a.infer_bind) if a.infer_bind else "PORT"
        log(
            f"created keys in {a.keys}; copy {bundle} to the worker machine and run there: "
            f"python -m inference --connect tcp://THIS_HOST:{port} --keys {bundle.name}"
        )
    if a.workers and not (a.keys / "worker-local").is_dir():
        make_keys(a.keys, "local")


@dataclass(frozen=True)
class Stage:
    """One process to supervise and its rules.

    ``restart``: if it crashes mid-call it is started again (capture, compositor, workers), unless
    it exits with a configuration error or keeps crashing. ``standby``: a warmed-up spare process
    waits to take over (the camera-rate stages, so the picture resumes within a second).
    ``ends_pipeline``: its normal end ends the pipeline (the display: ``q``, window closed,
    ``--max-frames``, end of stream).
    """

    name: str
    command: list[str]
    restart: bool = False
    ends_pipeline: bool = False
    standby: bool = False


def links(a: argparse.Namespace, folder: Path) -> Endpoints:
    """The four links, once: private ipc sockets in ``folder`` (or loopback ports with --links
    tcp); the worker link is ``--infer-bind`` when given (remote workers: TCP, CurveZMQ)."""
    base = private(folder) if a.links == "ipc" else tcp(a.port_base)
    return replace(base, infer=a.infer_bind) if a.infer_bind else base


def local_connect(endpoint: str) -> str:
    """Where local workers connect to reach a bound endpoint (loopback for a wildcard bind)."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    parts = urllib.parse.urlsplit(endpoint)
    host = parts.hostname or ""
    host = "127.0.0.1" if host in ("", "0.0.0.0", "*", "::") else host
    host = f"[{host}]" if ":" in host else host
    return f"tcp://{host}:{parts.port}"


def worker_names(n: int) -> list[str]:
    return ["inference"] if n == 1 else [f"worker-{i}" for i in range(1, n + 1)]


def stage_config(cls: type, a: argparse.Namespace, **computed: Any) -> Any:
    """A stage's settings by keyword: the user's flags plus what the launcher computes."""
    assert set(computed) == COMPUTED[cls], f"{cls.__name__}: {set(computed) ^ COMPUTED[cls]}"
    return from_namespace(cls, a, **computed)


def command(module: str, config: Any) -> list[str]:
    return [sys.executable, "-m", module, *to_argv(config)]


def default_mask_age(a: argparse.Namespace) -> float:
    """The fail-closed limit when --max-mask-age is not given: the model's own, plus 1.5 mask
    intervals with --mask-interval.

    Why: a worker resting S seconds between masks normally leaves the applied mask up to S plus
    one forward pass old; the model's limit alone (1 s for the selfie model) would hide every
    picture at S = 2. The half interval more absorbs jitter, so the steady state does not blink.
    """
    return max_mask_age(a.model) + 1.5 * a.mask_interval


def make_link_keys(a: argparse.Namespace, folder: Path) -> Path | None:
    """With --links tcp, this run's key for the local links, in the private runtime folder.

    Why: a loopback port is open to every account on the machine; with the links encrypted under
    a key only this user can read, another account's process cannot complete the handshake (no
    frame, no key command). ipc links need none: their folder already shuts others out.
    """
    if a.links != "tcp":
        return None
    from common.security import make_link_key  # zmq.auth: only when keys are used

    return make_link_key(folder / "link-keys")


def plan(
    a: argparse.Namespace, ep: Endpoints, stats_dir: Path, link_keys: Path | None = None
) -> list[Stage]:
    """The stages and their command lines (pure: reads and writes nothing). Building each stage's
    settings validates them, so a bad value stops everything before anything runs.

    ``link_keys``: this run's key for the local links when they are TCP (``make_link_keys``)."""

    def stats(name: str) -> Path:
        return stats_dir / f"{name}.json"

    age = a.max_mask_age if a.max_mask_age is not None else default_mask_age(a)
    capture = stage_config(
        CaptureConfig,
        a,
        bind=ep.frames,
        max_frames=0,
        stats_json=stats("capture"),
        link_keys=link_keys,
    )
    compositor = stage_config(
        CompositorConfig,
        a,
        frames=ep.frames,
        infer_bind=ep.infer,
        out_bind=ep.out,
        control_bind=ep.control,
        max_mask_age=age,
        stats_json=stats("compositor"),
        link_keys=link_keys,
    )
    display = stage_config(
        DisplayConfig,
        a,
        connect=ep.out,
        control=ep.control,
        stats_json=stats("display"),
        link_keys=link_keys,
    )
    stages = [
        Stage("capture", command("capture", capture), restart=True, standby=True),
        Stage("compositor", command("compositor", compositor), restart=True, standby=True),
    ]
    worker_keys = a.keys / "worker-local" if a.keys is not None else None
    for name in worker_names(a.workers):
        worker = stage_config(
            WorkerConfig,
            a,
            connect=local_connect(ep.infer),
            name=name,
            keys=worker_keys,
            stats_json=stats(name),
            link_keys=link_keys,
        )
        stages.append(Stage(name, command("inference", worker), restart=True))
    stages.append(Stage("display", command("display", display), ends_pipeline=True))
    return stages


# ---------------------------------------------------------------- supervision


@dataclass(frozen=True)
class Rules:
    grace: float = 5.0  # SIGTERM -> SIGKILL
    drain: float = 20.0  # after a file source ends, how long the display may show the rest
    restart_delay: float = 0.25  # a crashed stage starts again after this long
    crash_limit: int = 5  # a stage crashing this often ...
    crash_window: float = 60.0  # ... within this many seconds ends the pipeline


class Process(Protocol):
    pid: int

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def exit_status(rc: int) -> int:
    """A return code as a shell exit status (killed by signal N: 128 + N)."""
    return 128 - rc if rc < 0 else rc


class Supervisor:
    """The rules, without I/O: which stage starts, restarts, stops, and the pipeline's exit code.

    Processes come from ``spawn(stage)``, time from ``clock()``; the caller reports exits and
    signals and calls ``tick()`` (``supervise`` does that with real processes). The display ending
    ends the pipeline with 0; a stage failing ends it with its code; a stage finishing normally
    (a file source at its end) gives the display ``drain`` seconds to show the rest; a restartable
    stage that crashes is started again after ``restart_delay``, unless it exited with a
    configuration error or crashed ``crash_limit`` times within ``crash_window``; a signal stops
    all. Stopping is SIGTERM, then SIGKILL after ``grace``.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        spawn: Callable[[Stage], Process],
        clock: Callable[[], float] = time.monotonic,
        rules: Rules = Rules(),
        say: Callable[[str], None] = lambda text: log(text),
    ) -> None:
        self.stages = {s.name: s for s in stages}
        self.spawn, self.clock, self.rules, self.say = spawn, clock, rules, say
        self.procs: dict[str, Process] = {}
        self.running: set[str] = set()
        self.restart_at: dict[str, float] = {}
        self.crashes: dict[str, deque[float]] = {name: deque() for name in self.stages}
        self.code: int | None = None
        self.failed: str | None = None  # the stage whose exit ended the pipeline with an error
        self.stop_at: float | None = None  # when to SIGTERM everyone still running
        self.kill_at: float | None = None  # set once stopping: when to SIGKILL the rest

    @property
    def stopping(self) -> bool:
        return self.kill_at is not None

    @property
    def done(self) -> bool:
        return not self.running and (self.stopping or not self.restart_at)

    @property
    def exit_code(self) -> int:
        return self.code or 0

    def start(self) -> None:
        for stage in self.stages.values():
            self._start(stage)

    def _start(self, stage: Stage) -> None:
        proc = self.spawn(stage)
        self.procs[stage.name] = proc
        self.running.add(stage.name)
        self.say(f"started {stage.name} (pid {proc.pid})")

    def exited(self, name: str, rc: int) -> None:
        self.running.discard(name)
        if self.stopping:
            return  # shutting down: exits no longer decide anything
        stage, now = self.stages[name], self.clock()
        self.say(f"{name} exited with code {rc}")
        if rc == 0:
            self._finished(stage, now)
        elif stage.restart and rc != CONFIG_ERROR and self._may_restart(name, now):
            self.say(f"{name} crashed; the call goes on, restarting it")
            self.restart_at[name] = now + self.rules.restart_delay
        else:
            self.failed = self.failed or name
            self.stop(exit_status(rc))

    def _finished(self, stage: Stage, now: float) -> None:
        if stage.ends_pipeline:
            self.stop(0)
        elif self.stop_at is None and any(self.stages[n].ends_pipeline for n in self.running):
            self.say(
                f"{stage.name} finished; the display may show the rest for {self.rules.drain:g} s"
            )
            self.stop_at = now + self.rules.drain

    def _may_restart(self, name: str, now: float) -> bool:
        crashes = self.crashes[name]
        crashes.append(now)
        while crashes[0] <= now - self.rules.crash_window:
            crashes.popleft()
        if len(crashes) < self.rules.crash_limit:
            return True
        self.say(f"{name} crashed {len(crashes)} times in {self.rules.crash_window:g} s; giving up")
        return False

    def stop(self, code: int) -> None:
        """End the pipeline now with ``code`` (the first reason given wins)."""
        self.code = code if self.code is None else self.code
        now = self.clock()
        self.stop_at = now if self.stop_at is None else min(self.stop_at, now)

    def signalled(self, signum: int) -> None:
        if not self.stopping:
            self.say(f"stopping ({signal.Signals(signum).name})")
            self.stop(128 + signum)

    def tick(self) -> None:
        """Start what is due to restart, SIGTERM when stopping, SIGKILL after the grace period."""
        now = self.clock()
        for name, due in list(self.restart_at.items()):
            if now >= due and not self.stopping:
                del self.restart_at[name]
                self._start(self.stages[name])
        if self.stop_at is not None and now >= self.stop_at and not self.stopping:
            self.restart_at.clear()
            for name in sorted(self.running):
                self.procs[name].terminate()
            self.kill_at = now + self.rules.grace
        if self.kill_at is not None and now >= self.kill_at:
            for name in sorted(self.running):
                self.say(f"{name} did not stop in {self.rules.grace:g} s, killing it")
                self.procs[name].kill()
            self.kill_at = math.inf

    def kill_all(self) -> None:
        """Last resort (the launcher itself failing): no stage outlives it."""
        for name in self.running:
            self.procs[name].kill()


def _die_with_parent() -> None:
    """Linux: children get SIGTERM if the launcher dies, even by SIGKILL (no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# A standby process: imports the stage's code (OpenCV, numpy, zmq: the slow part of a start, 1-2 s
# on a busy 2-core machine) and its ``prepare()`` if it has one (the compositor's compiled kernels)
# and waits; "go" on stdin makes it the stage, as ``python -m MODULE``.
STANDBY = """import runpy, sys
import {module}.run
getattr({module}.run, "prepare", lambda: None)()
if sys.stdin.readline() != "go\\n":
    sys.exit(0)
sys.stdin.close()
sys.argv[0] = {module!r}
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


# A spare starts this long after its stage: importing OpenCV in four stages and two spares at
# once made every start ~1-2 s slower on 2 cores; a crash in the first seconds starts cold.
SPARE_DELAY_S = 3.0


class Spawner:
    """Starts a stage as a real process; prints its lines prefixed with its name, remembers its
    last one-line error, and reports its exit on ``events``.

    A ``standby`` stage gets a warmed-up spare process, so a restart takes over in milliseconds
    instead of a cold start's seconds; a spare that dies unused is never reported.
    """

    def __init__(self, events: queue.SimpleQueue, width: int) -> None:
        self.events, self.width = events, width
        self.errors: dict[str, str] = {}
        self.spares: dict[str, subprocess.Popen] = {}
        self.wanted: dict[str, tuple[Stage, float]] = {}  # spares to start, and when
        self.active: set[int] = set()  # pids whose exit is the stage's exit
        # Held from a process's start (or a spare's "go") until its pid is in ``active``, and by
        # the pump before it looks there: a stage that exits at once (a bad flag, a crash on
        # import) on a loaded machine must not be found "not active" and its exit lost, which
        # left the supervisor waiting for it forever.
        self._starting = threading.Lock()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        here = str(Path(__file__).resolve().parent)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))

    def __call__(self, stage: Stage) -> subprocess.Popen:
        with self._starting:
            proc = self._take_spare(stage.name) or self._popen(stage.name, stage.command)
            self.active.add(proc.pid)
        if stage.standby and stage.command[1:2] == ["-m"]:
            self.wanted[stage.name] = (stage, time.monotonic() + SPARE_DELAY_S)
        return proc

    def warm(self, now: float) -> None:
        """Start the spares that are due: not with the stages, so they do not slow the start."""
        for name, (stage, due) in list(self.wanted.items()):
            if now >= due:
                del self.wanted[name]
                module, argv = stage.command[2], stage.command[3:]
                standby = [stage.command[0], "-c", STANDBY.format(module=module), *argv]
                self.spares[name] = self._popen(name, standby, spare=True)
                log(f"started a spare {name} (pid {self.spares[name].pid})")

    def _take_spare(self, name: str) -> subprocess.Popen | None:
        spare = self.spares.pop(name, None)
        if spare is None or spare.stdin is None:
            return None
        try:
            spare.stdin.write("go\n")
            spare.stdin.close()
            return spare
        except OSError:  # it died: start cold
            spare.kill()
            return None

    def _popen(self, name: str, command: list[str], spare: bool = False) -> subprocess.Popen:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if spare else subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=self.env,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()
        return proc

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(f"{name:>{self.width}} | {line}")
            sys.stdout.flush()
            if line.startswith(f"{name}: error:") or ": error: " in line:
                self.errors[name] = line.strip()
        rc = proc.wait()
        with self._starting:
            if proc.pid in self.active:
                self.events.put(("exit", name, rc))

    def close(self) -> None:
        """Stop the unused spares."""
        for spare in self.spares.values():
            spare.kill()
            spare.wait()
        self.spares.clear()


def supervise(stages: Sequence[Stage], rules: Rules = Rules()) -> tuple[int, str | None]:
    """Run the stages as real processes under ``Supervisor``'s rules.

    Returns the exit code and, if a stage's failure set it, that stage's last one-line error.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()  # put() is safe in a signal handler
    spawner = Spawner(events, max(len(s.name) for s in stages))
    sup = Supervisor(stages, spawner, time.monotonic, rules)

    def on_signal(signum: int, _frame: Any) -> None:
        events.put(("signal", "", signum))

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sup.start()
        while not sup.done:
            try:
                kind, name, value = events.get(timeout=0.1)
            except queue.Empty:
                kind, name, value = "", "", 0
            if kind == "exit":
                sup.exited(name, value)
            elif kind == "signal":
                sup.signalled(value)
            sup.tick()
            if not sup.done:
                spawner.warm(time.monotonic())
    finally:
        sup.kill_all()
        spawner.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return sup.exit_code, spawner.errors.get(sup.failed or "")


def log(text: str) -> None:
    print(f"launch: {text}", flush=True)


# ---------------------------------------------------------------- stats and main


def merge_stats(stats_dir: Path, dest: Path) -> dict:
    """One JSON for the whole pipeline: the headline numbers plus every stage's own section."""
    stages = {}
    for f in sorted(stats_dir.glob("*.json")):
        try:
            stages[f.stem] = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
    cap, comp, disp = (stages.get(n, {}) for n in ("capture", "compositor", "display"))
    merged = {
        "capture_fps": cap.get("capture_fps"),
        "display_fps": disp.get("display_fps"),
        "inference_fps": comp.get("inference_fps"),
        "frames_captured": cap.get("frames_captured", 0),
        "frames_displayed": disp.get("frames_displayed", 0),
        "masks_received": comp.get("masks_received", 0),
        "frames_dropped": sum(s.get("frames_dropped", 0) for s in (cap, comp, disp)),
        "mask_age_ms": comp.get("mask_age_ms", {"p50": None, "p95": None}),
        "e2e_latency_ms": disp.get("e2e_latency_ms", {"p50": None, "p95": None}),
        "fail_closed_frames": comp.get("fail_closed_frames", 0),
        "masks_by_worker": comp.get("masks_by_worker", {}),
        "worker_timeouts": comp.get("worker_timeouts", 0),
        "bytes_per_frame_to_workers": comp.get("bytes_per_frame_to_workers"),
        "bytes_per_mask": comp.get("bytes_per_mask"),
        "stages": stages,
    }
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
    os.replace(tmp, dest)
    return merged


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The ports the kernel gives outgoing connections (Linux; IANA's 49152..65535 elsewhere)."""
    try:
        low, high = (int(x) for x in path.read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(49152, 65536)


def port_base_warning(links: str, port_base: int, ephemeral: range) -> str | None:
    """Why TCP links in the ephemeral range are a bad idea, or None. A stage that connects before
    its peer has bound can be handed the peer's own port as its source and connect to itself (TCP
    simultaneous open); the peer then cannot bind and the call shows nothing. Rare, so a warning
    the user can act on rather than a refusal."""
    if links != "tcp" or not ephemeral or port_base + 3 < ephemeral[0] or port_base > ephemeral[-1]:
        return None
    return (
        f"warning: --port-base {port_base} overlaps the ephemeral ports "
        f"{ephemeral[0]}..{ephemeral[-1]}, which outgoing connections take; pick a base below "
        f"{ephemeral[0]} (the default is {DEFAULT_PORT_BASE})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        check(a)
        if warning := port_base_warning(a.links, a.port_base, ephemeral_range()):
            log(warning)
        make_missing_keys(a)
        with private_folder() as folder:
            ep = links(a, folder)
            stages = plan(a, ep, folder, make_link_keys(a, folder))
            log(
                f"links: frames {ep.frames} workers {ep.infer} output {ep.out} control {ep.control}"
            )
            code, error = supervise(stages)
            if a.stats_json:
                m = merge_stats(folder, a.stats_json)
                log(
                    f"stats: display {m['display_fps']} fps, capture {m['capture_fps']} fps, "
                    f"masks {m['inference_fps']}/s, e2e p95 {m['e2e_latency_ms'].get('p95')} ms "
                    f"-> {a.stats_json}"
                )
    except FatalError as exc:
        print(f"launch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    log(f"exit code {code}: {error}" if error else f"exit code {code}")  # the last line
    return code


if __name__ == "__main__":
    sys.exit(main())

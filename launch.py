"""Start and supervise the whole pipeline: ``python launch.py [--source FILE] [--model selfie]``.

Every stage runs as its own process (capture, compositor, N inference workers, display); their log
lines are printed with the stage's name in front. When any stage exits, the others are stopped
(SIGTERM, then SIGKILL after a grace period; children also die with the launcher, so no orphans),
except that a file source finishing normally lets the display show the last frames first. The exit
code is 0 for a normal end (``q``, ``--max-frames``, end of file) and otherwise the failing stage's.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from capture.run import parse as parse_capture
from common.errors import FatalError
from common.security import make_keys
from common.sockets import is_loopback
from compositor.run import add_look_arguments, add_worker_arguments
from compositor.run import parse as parse_compositor
from display.run import parse as parse_display
from inference.run import add_model_arguments
from inference.run import parse as parse_worker
from inference.segmenter import max_mask_age

GRACE_S = 5.0  # SIGTERM -> SIGKILL
DRAIN_S = 20.0  # after a file source ends, how long the display may take to show the rest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python launch.py",
        description="Video-call privacy mode: keep the person sharp, hide the room. "
        "Starts capture, inference, compositor and display; 'p' toggles privacy, 'q' quits.",
    )
    g = p.add_argument_group("source")
    g.add_argument("--source", default="0", help="camera index, video, image or image folder")
    g.add_argument("--width", type=int, default=640, help="working width (aspect kept)")
    g.add_argument("--fps", type=float, default=30.0, help="rate for stills and folders")
    g.add_argument("--loop", action="store_true", help="repeat file sources")
    g.add_argument(
        "--lockstep",
        action="store_true",
        help="offline: no pacing, no mask reuse, every frame gets its own mask",
    )
    add_model_arguments(p.add_argument_group("model"))
    add_look_arguments(p.add_argument_group("look"))
    g = p.add_argument_group("display and output")
    g.add_argument("--headless", action="store_true", help="no window")
    g.add_argument("--output", type=Path, default=None, help="record the displayed video")
    g.add_argument("--max-frames", type=int, default=0, help="stop after N displayed frames")
    g.add_argument("--stats-json", type=Path, default=None, help="write merged stats here at exit")
    g.add_argument(
        "--save-alpha",
        type=Path,
        default=None,
        help="write the applied alpha of every frame as DIR/<index>.png",
    )
    g = p.add_argument_group("workers and network")
    g.add_argument(
        "--workers", type=int, default=1, help="local inference workers (0 = remote only)"
    )
    g.add_argument(
        "--infer-bind",
        default=None,
        help="where workers connect, e.g. tcp://0.0.0.0:5551 for remote workers",
    )
    add_worker_arguments(g)
    g.add_argument(
        "--nice",
        type=int,
        default=10,
        help="CPU priority drop for local workers, so the display keeps camera rate",
    )
    g.add_argument("--port-base", type=int, default=5550, help="first of four local ports")
    return p


@dataclass(frozen=True)
class Stage:
    """One process to supervise. ``restart``: a worker that dies mid-run is restarted, not fatal."""

    name: str
    command: list[str]
    restart: bool = False


def stage(name: str, module: str, argv: list[str], restart: bool = False) -> Stage:
    return Stage(name, [sys.executable, "-m", module, *argv], restart)


def _endpoint_port(endpoint: str) -> int:
    port = urllib.parse.urlsplit(endpoint).port
    if port is None:
        raise FatalError(f"--infer-bind {endpoint!r} needs a port, e.g. tcp://0.0.0.0:5551")
    return port


def plan(a: argparse.Namespace, stats_dir: Path) -> list[Stage]:
    """The stages and their command lines; each is validated by the stage's own parser first."""
    if a.workers < 0:
        raise FatalError("--workers must be >= 0")
    if not 1024 <= a.port_base <= 65530:
        raise FatalError("--port-base must be between 1024 and 65530")
    host = "tcp://127.0.0.1"
    frames, out, control = (f"{host}:{a.port_base + i}" for i in (0, 2, 3))
    infer_bind = a.infer_bind or f"{host}:{a.port_base + 1}"
    # Local workers connect to the bound address itself (127.0.0.1 for a wildcard bind).
    bound_host = urllib.parse.urlsplit(infer_bind).hostname or ""
    local_host = "127.0.0.1" if bound_host in ("", "0.0.0.0", "*", "::") else bound_host
    infer_local = f"tcp://{local_host}:{_endpoint_port(infer_bind)}"
    worker_keys: list[str] = []
    if not is_loopback(infer_bind) and a.keys is None:
        raise FatalError(
            f"--infer-bind {infer_bind} is reachable from the network and must be encrypted: "
            "create keys with 'python -m inference keys KEYDIR --worker NAME' "
            "and pass --keys KEYDIR"
        )
    if a.keys is not None:
        if not (a.keys / "compositor.key_secret").exists():
            # First run with a new key folder: make the keys, like ssh-keygen would, and say
            # what to copy where, so remote inference is two commands.
            bundle = make_keys(a.keys, "remote")
            log(
                f"created keys in {a.keys}; copy {bundle} to the worker machine and run there: "
                f"python -m inference --connect tcp://THIS_HOST:{_endpoint_port(infer_bind)} "
                f"--keys {bundle.name}"
            )
        # The worker socket is a CURVE server now: local workers need a key pair of their own.
        if a.workers and not (a.keys / "worker-local").is_dir():
            make_keys(a.keys, "local")
        worker_keys = ["--keys", str(a.keys / "worker-local")]

    def stats(name: str) -> list[str]:
        return ["--stats-json", str(stats_dir / f"{name}.json")]

    lock = ["--lockstep"] if a.lockstep else []
    capture = [
        "--source",
        a.source,
        "--width",
        str(a.width),
        "--fps",
        str(a.fps),
        "--bind",
        frames,
        *(["--loop"] if a.loop else []),
        *lock,
        *stats("capture"),
    ]
    max_age = a.max_mask_age if a.max_mask_age is not None else max_mask_age(a.model)
    look = ["--privacy", a.privacy, "--blur", str(a.blur), "--max-mask-age", str(max_age)]
    look += ["--background", str(a.background)] if a.background else []
    look += ["--background-color", a.background_color] if a.background_color else []
    look += ["--no-refine"] if a.no_refine else []
    look += ["--no-temporal"] if a.no_temporal else []
    compositor = [
        "--frames",
        frames,
        "--infer-bind",
        infer_bind,
        "--out-bind",
        out,
        "--control-bind",
        control,
        *look,
        *lock,
        "--worker-timeout",
        str(a.worker_timeout),
        "--remote-encoding",
        a.remote_encoding,
        "--jpeg-quality",
        str(a.jpeg_quality),
        *(["--keys", str(a.keys)] if a.keys else []),
        *(["--save-alpha", str(a.save_alpha)] if a.save_alpha else []),
        *stats("compositor"),
    ]
    display = [
        "--connect",
        out,
        "--control",
        control,
        *(["--headless"] if a.headless else []),
        *(["--output", str(a.output)] if a.output else []),
        "--max-frames",
        str(a.max_frames),
        *stats("display"),
    ]
    model = [
        "--model",
        a.model,
        "--confidence",
        str(a.confidence),
        "--mask-threshold",
        str(a.mask_threshold),
        "--people",
        a.people,
        "--proposals",
        str(a.proposals),
        "--input-size",
        str(a.input_size),
        "--threads",
        str(a.threads),
        "--selfie-variant",
        a.selfie_variant,
        "--nice",
        str(a.nice),
        *(["--model-dir", str(a.model_dir)] if a.model_dir else []),
    ]
    # Validate every command line with the stage's own parser: errors show up before anything runs.
    parse_capture(capture)
    parse_compositor(compositor)
    parse_display(display)
    stages = [stage("capture", "capture", capture), stage("compositor", "compositor", compositor)]
    for i in range(1, a.workers + 1):
        name = f"worker-{i}" if a.workers > 1 else "inference"
        argv = ["--connect", infer_local, "--name", name, *model, *worker_keys, *stats(name)]
        parse_worker(argv)
        stages.append(stage(name, "inference", argv, restart=True))
    stages.append(stage("display", "display", display))
    return stages


def _die_with_parent() -> None:
    """Linux: children get SIGTERM if the launcher dies, even by SIGKILL (no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def supervise(stages: list[Stage], grace: float = GRACE_S, drain: float = DRAIN_S) -> int:
    """Run the stages until one ends; stop the rest; return the pipeline's exit code.

    Rules: the display ending (q, window closed, --max-frames, end of stream) ends the pipeline with
    code 0; any stage failing ends it with that stage's code; a file source finishing normally gives
    the display ``drain`` seconds to show the rest. A restartable stage (an inference worker) that
    dies mid-run is restarted after a second: the picture stays live and fails closed meanwhile.
    Only a worker's configuration error (exit code 2: bad flag, missing model) is fatal.
    """
    events: queue.Queue[tuple[str, int]] = queue.Queue()
    procs: dict[str, subprocess.Popen] = {}
    by_name = {s.name: s for s in stages}
    width = max(len(s.name) for s in stages)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")])
    )

    def pump(name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(f"{name:>{width}} | {line}")
            sys.stdout.flush()
        events.put((name, proc.wait()))

    def start(s: Stage) -> None:
        proc = subprocess.Popen(
            s.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        procs[s.name] = proc
        threading.Thread(target=pump, args=(s.name, proc), daemon=True).start()

    for s in stages:
        start(s)

    signalled: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _f: signalled.append(signum))

    exit_code: int | None = None
    stop_at: float | None = None  # when to SIGTERM everyone still running
    kill_at: float | None = None
    restarts: dict[str, float] = {}  # name -> when to restart it
    running = set(procs)
    while running or (restarts and kill_at is None):
        try:
            name, rc = events.get(timeout=0.2)
        except queue.Empty:
            name, rc = "", 0
        now = time.monotonic()
        if name:
            running.discard(name)
            if kill_at is None:  # not yet shutting down: this exit decides
                log(f"{name} exited with code {rc}")
                if by_name[name].restart and rc not in (0, 2):
                    log(f"{name} died; the pipeline goes on, restarting it in 1 s")
                    restarts[name] = now + 1.0
                elif rc != 0:
                    exit_code = rc if exit_code is None else exit_code
                    stop_at = now
                elif name == "display":
                    exit_code = 0 if exit_code is None else exit_code
                    stop_at = now
                elif "display" in running and stop_at is None:
                    stop_at = now + drain  # source finished: let the display show the rest
        for n, due in list(restarts.items()):
            if kill_at is None and now >= due:
                del restarts[n]
                start(by_name[n])
                running.add(n)
        if signalled and kill_at is None:
            log("stopping (signal)")
            exit_code = 128 + signalled[0] if exit_code is None else exit_code
            stop_at = now
        if stop_at is not None and now >= stop_at and kill_at is None:
            for n in running:
                procs[n].send_signal(signal.SIGTERM)
            kill_at = now + grace
        if kill_at is not None and now >= kill_at:
            for n in running:
                log(f"{n} did not stop in {grace:.0f} s, killing it")
                procs[n].kill()
            kill_at = float("inf")
    return exit_code or 0


def log(text: str) -> None:
    print(f"launch: {text}", flush=True)


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


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="privacycam-") as tmp:
        try:
            stages = plan(a, Path(tmp))
        except FatalError as exc:
            print(f"launch: error: {exc}", file=sys.stderr)
            return exc.exit_code
        code = supervise(stages)
        if a.stats_json:
            m = merge_stats(Path(tmp), a.stats_json)
            log(
                f"stats: display {m['display_fps']} fps, capture {m['capture_fps']} fps, "
                f"masks {m['inference_fps']}/s, e2e p95 {m['e2e_latency_ms'].get('p95')} ms "
                f"-> {a.stats_json}"
            )
    log(f"exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())

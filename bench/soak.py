"""Soak test: run N minutes, sample every process's resident memory, print growth per minute.

    python bench/soak.py --minutes 15                  # the whole pipeline (launch.py), 1280x720
    python bench/soak.py --minutes 10 --worker-only    # one selfie worker fed by a stand-in
                                                       # compositor in this process, 1280x720

RSS comes from /proc/PID/status (VmRSS; no psutil). The slope (MB/min) is a least-squares line
through the samples taken after the first ``--warmup`` minute (model loading, caches, the first
allocations are not growth). A flat process shows a slope near 0 and a small max-min spread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, SELFIE, SHARED, clip_frames, describe  # noqa: E402
from common import protocol  # noqa: E402

CLIP = SHARED / "media" / "videos" / "person_juggling_ball_sam2.mp4"


def status_kb(pid: int, field: str) -> int | None:
    """A numeric field of /proc/PID/status (VmRSS is in kB), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/*/stat)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def stage_name(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in args if a]
    if len(words) > 2 and words[1] == "-c" and "run_module('" in words[2]:
        # the launcher's pre-started spare of a stage (waits for "go" on stdin)
        return words[2].split("run_module('", 1)[1].split("'", 1)[0] + "-spare"
    if "-m" in words:
        name = words[words.index("-m") + 1]
        if "--name" in words:
            name = words[words.index("--name") + 1]
        return name
    return Path(words[1]).stem if len(words) > 1 else str(pid)


def slope_mb_per_min(t_s: list[float], rss_kb: list[int]) -> float:
    if len(t_s) < 3:
        return float("nan")
    a, _ = np.polyfit(np.asarray(t_s) / 60.0, np.asarray(rss_kb) / 1024.0, 1)
    return float(a)


class Sampler:
    """RSS of a set of named processes every ``every`` seconds."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: dict[str, list[tuple[float, int, int]]] = {n: [] for n in pids}

    def sample(self, t: float) -> None:
        for name, pid in self.pids.items():
            rss = status_kb(pid, "VmRSS")
            threads = status_kb(pid, "Threads")
            if rss is not None:
                self.samples[name].append((t, rss, threads or 0))

    def per_minute(self) -> None:
        """RSS (MB) at each whole minute, to see the shape and not only the slope."""
        for name, rows in self.samples.items():
            marks, shown = [], -1
            for t, rss, _ in rows:
                if int(t // 60) > shown:
                    shown = int(t // 60)
                    marks.append(f"{rss / 1024:.1f}")
            print(f"{name:<14} RSS per minute: {' '.join(marks)}")

    def report(self, warmup_s: float) -> None:
        print(f"{'process':<14} {'first MB':>9} {'last MB':>9} {'slope MB/min':>13} {'threads':>8}")
        for name, rows in self.samples.items():
            late = [r for r in rows if r[0] >= warmup_s]
            if not rows:
                continue
            slope = slope_mb_per_min([r[0] for r in late], [r[1] for r in late])
            print(
                f"{name:<14} {rows[0][1] / 1024:9.1f} {rows[-1][1] / 1024:9.1f} "
                f"{slope:13.3f} {rows[-1][2]:8d}"
            )


def stand_in_compositor(
    endpoint: str, frames: list[np.ndarray], stop: threading.Event, handed: list[int]
) -> None:
    """Answer every READY and mask with the next frame, at most 30 frames a second."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    i, last = 0, 0.0
    while not stop.is_set():
        if not router.poll(200):
            continue
        identity, *_ = router.recv_multipart(copy=False)
        time.sleep(max(0.0, last + 1 / 30 - time.monotonic()))
        last = time.monotonic()
        msg = protocol.Frame(frame_id=i + 1, ts=time.time(), image=frames[i % len(frames)])
        router.send_multipart([identity, *protocol.encode(msg)], copy=False)
        i += 1
        handed[0] = i
    ctx.destroy(0)


HANDED = [0]  # frames the stand-in compositor handed out (worker-only mode)


def start_worker_only(a: argparse.Namespace) -> tuple[subprocess.Popen, dict[str, int], object]:
    endpoint = f"tcp://127.0.0.1:{a.port}"
    stop = threading.Event()
    feeder = threading.Thread(
        target=stand_in_compositor,
        args=(endpoint, clip_frames(CLIP, a.width), stop, HANDED),
        daemon=True,
    )
    feeder.start()
    cmd = [sys.executable, "-m", "inference", "--connect", endpoint, "--model", "selfie"]
    cmd += ["--model-dir", str(SELFIE), "--name", "inference", "--nice", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, {"inference": proc.pid}, stop


def start_pipeline(a: argparse.Namespace) -> tuple[subprocess.Popen, dict[str, int], None]:
    cmd = [sys.executable, str(REPO / "launch.py"), "--source", str(CLIP), "--loop"]
    cmd += ["--width", str(a.width), "--model", "selfie", "--model-dir", str(SELFIE)]
    cmd += ["--headless", "--port-base", str(a.port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    pids: dict[str, int] = {}
    while time.monotonic() < deadline and len(pids) < 4:
        time.sleep(1)
        pids = {stage_name(p): p for p in children(proc.pid)}
    pids["launch"] = proc.pid
    return proc, pids, None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=1.0, help="minutes left out of the slope")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--port", type=int, default=5750, help="first port used")
    p.add_argument("--worker-only", action="store_true", help="one worker, stand-in compositor")
    a = p.parse_args()
    print(describe())
    proc, pids, stop = (start_worker_only if a.worker_only else start_pipeline)(a)
    sampler = Sampler(pids)
    print("sampling", ", ".join(f"{n} ({pid})" for n, pid in pids.items()), flush=True)
    t0 = time.monotonic()
    try:
        while (t := time.monotonic() - t0) < a.minutes * 60 and proc.poll() is None:
            sampler.sample(t)
            time.sleep(a.every)
    finally:
        proc.terminate()
        proc.wait(15)
        if stop is not None:
            stop.set()
    if proc.returncode not in (0, -15, 143):
        print(f"note: the run ended early with code {proc.returncode}")
    print(f"{a.minutes:g} min at width {a.width}, slopes after the first {a.warmup:g} min:")
    sampler.report(a.warmup * 60)
    sampler.per_minute()
    if a.worker_only:
        print(f"frames handed to the worker: {HANDED[0]} ({HANDED[0] / (a.minutes * 60):.1f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

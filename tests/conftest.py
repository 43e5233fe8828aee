"""Shared test fixtures: where ../shared is, free ports, running stages as real processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
MEDIA = SHARED / "media"
SELFIE = MODELS / "selfie-segmentation"
STANDIN = MODELS / "mask-rcnn-standin"
ANCHOR = MEDIA / "videos" / "news_anchor_akiyo_cif.mp4"
SITTING = MEDIA / "videos" / "person_sitting_outdoors_pixabay35590.mp4"
HIKE = MEDIA / "gt_video" / "davis_hike"

# Tests that need the shared models and media are marked with this, one by one (or a whole module
# with ``pytestmark = needs_shared``); every other test runs without ../shared.
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"needs {SHARED} (shared models and media) beside the repo"
)


def free_port_base(n: int = 4) -> int:
    """A base port with n free consecutive ports (checked by binding them), below the kernel's
    ephemeral range. Inside it, a stage that connects before its peer has bound can be given the
    peer's own port as its source and connect to itself (TCP simultaneous open), after which the
    peer cannot bind: a run that shows nothing, rarely, on a busy machine."""
    from launch import ephemeral_range  # the launcher's own reading of the range

    top = max(min(ephemeral_range().start, 65536) - n, 20001)
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, top)
        socks: list[socket.socket] = []
        try:
            for i in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free ports")


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile the compositor's kernels once, in this process, before any test: on a fresh
    checkout that takes seconds and writes numba's cache, which every compositor process the
    tests start then only loads (otherwise the first of them would spend its deadline compiling).
    """
    from compositor.run import prepare

    prepare()


@pytest.fixture
def port_base() -> int:
    return free_port_base()


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    return e


def launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python launch.py ARGS`` to completion (real processes), capturing its output."""
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *map(str, args)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def launch_selfie(
    tmp_path: Path, port_base: int, *extra, frames: int = 60
) -> tuple[subprocess.CompletedProcess, Path]:
    """launch.py on the news-anchor clip with the selfie model, headless, ``frames`` frames.

    Returns the finished run and where its merged stats JSON is.
    """
    stats = tmp_path / "s.json"
    r = launch(
        "--source",
        ANCHOR,
        "--model",
        "selfie",
        "--model-dir",
        SELFIE,
        "--headless",
        "--max-frames",
        frames,
        "--stats-json",
        stats,
        "--port-base",
        port_base,
        *extra,
    )
    return r, stats


class Procs:
    """Stages started one by one (so a test can kill, stop or restart single ones)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(
        self, module: str, *args: str, name: str | None = None, prefix: tuple[str, ...] = ()
    ) -> subprocess.Popen:
        """Start ``python -m module args`` (``prefix``: e.g. ip netns exec NS, another host)."""
        log = open(self.tmp / f"{name or module}.log", "a")
        p = subprocess.Popen(
            [*prefix, sys.executable, "-m", module, *map(str, args)],
            cwd=REPO,
            env=env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        p.log_path = self.tmp / f"{name or module}.log"  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def endpoints(port_base: int) -> list[str]:
    """capture, workers, display, control endpoints of a pipeline on loopback."""
    return [f"tcp://127.0.0.1:{port_base + i}" for i in range(4)]


def start_core(
    procs: Procs,
    port_base: int,
    tmp_path: Path,
    *compositor_args,
    infer: str | None = None,
    display_args: tuple = (),
    source: Path = ANCHOR,
) -> subprocess.Popen:
    """capture (``source`` looped: the anchor clip), compositor (stats in tmp_path/comp.json),
    headless display.

    Returns the compositor; workers are started separately so tests can kill or restart them.
    """
    ep = endpoints(port_base)
    procs.start("capture", "--source", source, "--loop", "--bind", ep[0])
    comp = procs.start(
        "compositor",
        "--frames",
        ep[0],
        "--infer-bind",
        infer or ep[1],
        "--out-bind",
        ep[2],
        "--control-bind",
        ep[3],
        "--stats-json",
        tmp_path / "comp.json",
        *compositor_args,
    )
    procs.start("display", "--headless", "--connect", ep[2], "--control", ep[3], *display_args)
    return comp


def start_worker(
    procs: Procs, connect: str, *extra, name: str = "inference", prefix: tuple = ()
) -> subprocess.Popen:
    """A selfie-model worker named ``name`` (its log is tmp_path/<name>.log)."""
    return procs.start(
        "inference",
        "--connect",
        connect,
        "--name",
        name,
        "--model",
        "selfie",
        "--model-dir",
        SELFIE,
        *extra,
        name=name,
        prefix=prefix,
    )


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop_all()


def stats_now(path: Path) -> dict:
    """A stats file as it is now, {} before its first complete write: for predicates inside a
    ``wait_for`` whose own deadline must govern (a stage on a loaded machine may take longer than
    ``read_json``'s 5 s to write its first stats)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_json(path: Path, timeout: float = 5.0) -> dict:
    """A stats file, waiting (up to ``timeout``) for its first complete write."""
    return wait_for(lambda: stats_now(path) or None, timeout, f"stats at {path}", step=0.05)


def wait_for(predicate, timeout: float, what: str, step: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value (tests only; stages never poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def xdisplay() -> Iterator[str]:
    """A real X server (Xvfb) for window tests."""
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        if os.environ.get("CI"):
            pytest.fail("Xvfb/xdotool missing: .ci/run must install xvfb and xdotool")
        pytest.skip("Xvfb/xdotool not installed (apt-get install xvfb xdotool)")
    r, w = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(w,),
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()
    display = f":{number}"

    def answers() -> bool:  # the number can come before the server takes clients (seen in CI)
        assert proc.poll() is None, f"Xvfb {display} exited with code {proc.returncode}"
        r = subprocess.run(
            ["xdotool", "getdisplaygeometry"],
            env=dict(os.environ, DISPLAY=display),
            capture_output=True,
            timeout=10,
        )
        return r.returncode == 0

    wait_for(answers, 20, f"Xvfb {display} to take clients", step=0.1)
    yield display
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="module")
def netns() -> Iterator[tuple[str, str, str]]:
    """Another host: a network namespace joined to this one by a veth pair (link-local addresses).

    Yields (namespace, this side's address, the namespace's address). Needs root and iproute2.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI"):
            pytest.fail("network namespace tests need root and iproute2 in CI")
        pytest.skip("needs root and iproute2 (ip netns)")
    k = os.getpid() % 200 + 20
    ns, here, there = f"pcam{os.getpid()}", f"169.254.{k}.1", f"169.254.{k}.2"
    va, vb = f"pcv{os.getpid() % 100000}a", f"pcv{os.getpid() % 100000}b"
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
        ["ip", "link", "set", vb, "netns", ns],
        ["ip", "addr", "add", f"{here}/24", "dev", va],
        ["ip", "link", "set", va, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{there}/24", "dev", vb],
        ["ip", "netns", "exec", ns, "ip", "link", "set", vb, "up"],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True, timeout=20)
        yield ns, here, there
    finally:
        subprocess.run(["ip", "link", "del", va], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

"""End to end: launch.py runs real processes on real clips with real models."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import (
    ANCHOR,
    HIKE,
    REPO,
    SELFIE,
    STANDIN,
    env,
    free_port_base,
    launch,
    launch_selfie,
    needs_shared,
    read_json,
    wait_for,
)

REQUIRED = (
    "capture_fps",
    "display_fps",
    "inference_fps",
    "frames_captured",
    "frames_displayed",
    "masks_received",
    "frames_dropped",
    "mask_age_ms",
    "e2e_latency_ms",
)


@needs_shared
def test_selfie_pipeline_on_a_clip_reports_stats_and_records(tmp_path, port_base):
    rec = tmp_path / "rec.mp4"
    r, stats = launch_selfie(tmp_path, port_base, "--output", rec)
    assert r.returncode == 0, r.stdout + r.stderr
    cap = cv2.VideoCapture(str(rec))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    ok, first = cap.read()
    assert ok and first.shape == (288, 352, 3)  # 352x288 clip: capture never enlarges
    s = json.loads(stats.read_text())
    for key in REQUIRED:
        assert key in s, key
    assert s["frames_displayed"] == 60
    assert s["frames_captured"] >= 60
    assert s["masks_received"] >= 10  # the fast model keeps up with most frames
    assert s["capture_fps"] > 0 and s["display_fps"] > 0 and s["inference_fps"] > 0
    for key in ("mask_age_ms", "e2e_latency_ms"):
        assert set(s[key]) == {"p50", "p95"} and s[key]["p50"] is not None
    assert s["masks_by_worker"] == {"inference": s["masks_received"]}
    # every stage logged a status line, prefixed with its name
    for name in ("capture", "compositor", "inference", "display"):
        assert f"{name} |" in r.stdout


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@needs_shared
def test_lockstep_writes_one_alpha_per_frame_matching_ground_truth(tmp_path, port_base):
    out = tmp_path / "alpha"
    r = launch(
        "--source",
        HIKE / "frames",
        "--model",
        "selfie",
        "--model-dir",
        SELFIE,
        "--lockstep",
        "--headless",
        "--save-alpha",
        out,
        "--port-base",
        port_base,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    frames = sorted((HIKE / "frames").glob("*.jpg"))
    alphas = sorted(out.glob("*.png"))
    assert [p.name for p in alphas] == [f"{i:06d}.png" for i in range(len(frames))]
    ious = []
    for i, f in enumerate(frames):
        alpha = cv2.imread(str(alphas[i]), cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(str(HIKE / "masks" / f"{f.stem}.png"), cv2.IMREAD_GRAYSCALE)
        assert alpha.ndim == 2 and alpha.shape == (360, 640)  # frame size at --width 640
        gt = cv2.resize(gt, (640, 360), interpolation=cv2.INTER_NEAREST)
        ious.append(_iou(alpha >= 128, gt >= 128))
    # measured here: mean 0.81, worst frame 0.62 (selfie model, refined alpha)
    assert np.mean(ious) > 0.78, np.mean(ious)
    assert min(ious) > 0.55


@needs_shared
def test_mask_rcnn_standin_runs_through_the_pipeline(tmp_path, port_base):
    stats = tmp_path / "s.json"
    r = launch(
        "--source",
        ANCHOR,
        "--model",
        "maskrcnn",
        "--model-dir",
        STANDIN,
        "--proposals",
        10,
        "--headless",
        "--max-frames",
        150,  # 6 s: the worker (nice 10) loads the net and makes a mask in ~1.5 s here
        "--stats-json",
        stats,
        "--port-base",
        port_base,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(stats.read_text())
    assert s["frames_displayed"] == 150
    assert s["masks_received"] >= 1


def _garbage(tmp_path: Path, name: str, data: bytes = b"this is not media\n") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@needs_shared
@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_file", "does not exist"),
        ("corrupt_video", "not a readable video"),
        ("corrupt_image", "not a readable image"),
        ("empty_folder", "has no images"),
        ("no_camera", "no camera at index"),
        ("missing_model_dir", "model"),
        ("corrupt_model", "model"),
        ("bad_flag", "--blur"),
        ("bad_background", "background"),
    ],
)
def test_bad_input_gives_one_clear_line_not_a_traceback(tmp_path, port_base, case, expect):
    args = ["--source", ANCHOR, "--model", "selfie", "--model-dir", SELFIE]
    if case == "missing_file":
        args[1] = tmp_path / "nope.mp4"
    elif case == "corrupt_video":
        args[1] = _garbage(tmp_path, "clip.mp4")
    elif case == "corrupt_image":
        args[1] = _garbage(tmp_path, "photo.jpg")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args[1] = tmp_path / "empty"
    elif case == "no_camera":
        args[1] = "9"  # no camera on these machines (a real check, not a mock)
    elif case == "missing_model_dir":
        args[5] = tmp_path / "no-models-here"
    elif case == "corrupt_model":
        d = tmp_path / "broken"
        d.mkdir()
        for name in ("selfie_segmentation.tflite", "selfie_segmentation_landscape.tflite"):
            _garbage(d, name, b"\x00" * 1000)
        args[5] = d
    elif case == "bad_flag":
        args += ["--blur", "-3"]
    elif case == "bad_background":
        args += ["--background", _garbage(tmp_path, "beach.jpg")]
    r = launch(*args, "--headless", "--max-frames", 30, "--port-base", port_base, timeout=60)
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert errors, text
    assert any(expect in line for line in errors), errors


class Running:
    """``python launch.py ARGS`` running in the background; its output lines collected."""

    def __init__(self, *args):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "launch.py"), *map(str, args)],
            cwd=REPO,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self):
        return "".join(self.lines)

    def wait_line(self, pattern, timeout, what):
        def found():
            assert self.proc.poll() is None or any(re.search(pattern, x) for x in self.lines), (
                f"launch.py ended:\n{self.text()[-3000:]}"
            )
            return next((m for x in self.lines if (m := re.search(pattern, x))), None)

        return wait_for(found, timeout, what, step=0.05)

    def until(self, predicate, timeout, what):
        """``wait_for`` that fails at once if the launcher ended, and whose failure carries its log:
        a run that shows nothing on a loaded CI machine must say why, not only that it timed out."""

        def done():
            assert self.proc.poll() is None, f"launch.py ended:\n{self.text()[-4000:]}"
            return predicate()

        try:
            return wait_for(done, timeout, what)
        except AssertionError as e:
            if "launch.py ended" in str(e):
                raise
            raise AssertionError(f"{e}; launch.py said:\n{self.text()[-4000:]}") from None

    def links(self):
        m = self.wait_line(
            r"links: frames (\S+) workers (\S+) output (\S+) control (\S+)", 30, "links"
        )
        return dict(zip(("frames", "infer", "out", "control"), m.groups(), strict=True))

    def stop(self):
        """SIGTERM the launcher as a user would; it stops every stage and returns 128 + 15."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise


def _selfie_call(*extra):
    return Running(
        "--source",
        ANCHOR,
        "--loop",
        "--model",
        "selfie",
        "--model-dir",
        SELFIE,
        "--headless",
        *extra,
    )


def _command_lines():
    """(pid, raw command line) of every process still readable."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            yield int(cmdline.parent.name), cmdline.read_bytes()
        except OSError:
            continue


def _processes_naming(folder):
    """Pids whose command line mentions ``folder`` (every stage's does: its stats file)."""
    return [pid for pid, line in _command_lines() if str(folder).encode() in line]


def _reading_stdin(pid):
    """True once ``pid`` waits in read(0, ...): a spare that imported its stage and waits for "go".
    (/proc/PID/syscall: the syscall number, then its first argument, the file descriptor.)"""
    try:
        nr, fd = (Path(f"/proc/{pid}/syscall").read_text().split() + ["", ""])[:2]
    except OSError:
        return False
    return nr in ("0", "63") and fd == "0x0"  # read on x86_64 / arm64


def _snapshot(path):
    """(write time, frames_displayed) of a stats file, read from one inode (atomic replace)."""
    try:
        with open(path) as f:
            return os.fstat(f.fileno()).st_mtime, json.load(f).get("frames_displayed", 0)
    except (OSError, ValueError):
        return None


def _kill_and_time_the_return(call, folder: Path, victim: str) -> float:
    """kill -9 ``victim``'s current process; seconds until frames reach the display again."""
    display = folder / "display.json"
    spare = int(call.wait_line(rf"started a spare {victim} \(pid (\d+)\)", 30, "spare")[1])
    wait_for(lambda: _reading_stdin(spare), 30, f"the {victim} spare to finish its imports")
    fps = read_json(folder / "capture.json")["capture_fps"]
    pid = int(call.wait_line(rf"started {victim} \(pid (\d+)\)", 5, "pid")[1])
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    snaps = []  # display stats written after the kill: (time written, frames displayed)

    def resumed():
        s = _snapshot(display)
        if s and s[0] > killed_at and (not snaps or s[0] != snaps[-1][0]):
            snaps.append(s)
        return len(snaps) >= 2 and snaps[-1][1] - snaps[-2][1] >= 2

    wait_for(resumed, 20, f"frames on the display after {victim} was killed", step=0.05)
    restarted = call.wait_line(rf"started {victim} \(pid (?!{pid}\))(\d+)\)", 1, "restart")
    assert int(restarted[1]) != pid
    (_, before), (written, after) = snaps[-2:]
    # The n frames counted between the last two snapshots were shown at most at the camera's
    # rate, so the first was shown at least (n - 1) / rate before the later snapshot's write.
    first_frame = written - (after - before - 1) / (1.1 * fps) - killed_at
    print(f"{victim} killed: frames again after <= {first_frame:.2f} s ({snaps})")
    return first_frame


@needs_shared
def test_call_survives_a_killed_compositor_and_then_a_killed_capture(tmp_path):
    """kill -9 the compositor of a running call, then its capture: each time the launcher starts
    a new one and frames reach the display again within 2 s. (One call for both: the second kill
    also shows that a call which already lost a stage survives the next loss.)"""
    call = _selfie_call()
    try:
        folder = Path(call.links()["frames"][len("ipc://") :]).parent
        display = folder / "display.json"
        call.until(lambda: (_snapshot(display) or (0, 0))[1] > 30, 90, "frames on the display")
        for victim in ("compositor", "capture"):
            assert _kill_and_time_the_return(call, folder, victim) <= 2.0, victim
        assert call.stop() == 128 + signal.SIGTERM
        assert not folder.exists()  # the private runtime folder is removed at exit
        assert not _processes_naming(folder)  # no stage and no standby process outlives it
    finally:
        call.stop()


PROBE = r"""
import errno, json, socket, sys, time
import zmq
eps = json.loads(sys.argv[1])
ctx = zmq.Context()
kinds = {"frames": zmq.PULL, "infer": zmq.DEALER, "out": zmq.PULL, "control": zmq.PUSH}
socks, mons, res = {}, {}, {}
for name, ep in eps.items():
    s = ctx.socket(kinds[name])
    s.linger = 0
    s.immediate = 1  # a send only goes to a completed connection
    mons[name] = s.get_monitor_socket(zmq.EVENT_CONNECTED)
    s.connect(ep)
    socks[name] = s
    try:
        u = socket.socket(socket.AF_UNIX)
        u.connect(ep[len("ipc://"):])
        res[name + "_unix"] = "connected"
    except OSError as exc:
        res[name + "_unix"] = errno.errorcode.get(exc.errno, str(exc.errno))
    finally:
        u.close()
deadline = time.monotonic() + 1.5
for name, mon in mons.items():
    res[name + "_connected"] = bool(mon.poll(max(1, int((deadline - time.monotonic()) * 1000))))
res["frame_received"] = bool(socks["frames"].poll(1000))
res["picture_received"] = bool(socks["out"].poll(1000))
try:
    socks["control"].send_multipart([b"probe"], flags=zmq.NOBLOCK)
    res["control_sent"] = True
except zmq.Again:
    res["control_sent"] = False
print(json.dumps(res))
"""


def _nobody_python(tmp: Path) -> list[str]:
    """A Python with pyzmq that user nobody can run: the system 3.11 and a world-readable copy."""
    import zmq

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another local user")
    system = shutil.which("python3.11", path="/usr/bin:/usr/local/bin")
    if system is None:
        pytest.skip("needs a system python3.11 that user nobody can run")
    lib = Path(tempfile.mkdtemp(prefix="pcam-probe-"))
    lib.chmod(0o755)
    site = Path(zmq.__file__).parent.parent
    shutil.copytree(site / "zmq", lib / "zmq")
    if (site / "pyzmq.libs").is_dir():
        shutil.copytree(site / "pyzmq.libs", lib / "pyzmq.libs")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return [*nobody, "env", f"PYTHONPATH={lib}", system]


def _probe(python, eps):
    r = subprocess.run(
        [*python, "-c", PROBE, json.dumps(eps)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@needs_shared
def test_another_local_user_cannot_reach_the_links(tmp_path):
    """The pipeline's links are Unix sockets in a folder only the user who started it can enter:
    user nobody connects to none of them, gets no frame and cannot send a key command."""
    nobody = _nobody_python(tmp_path)
    call = _selfie_call()
    try:
        eps = call.links()
        folder = Path(eps["frames"][len("ipc://") :]).parent
        assert all(e.startswith(f"ipc://{folder}/") for e in eps.values())
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        call.until(lambda: (_snapshot(folder / "display.json") or (0, 0))[1] > 0, 90, "pictures")
        own = _probe([sys.executable], eps)  # the probe works: its owner reaches every link
        assert all(own[f"{n}_connected"] and own[f"{n}_unix"] == "connected" for n in eps), own
        assert own["frame_received"] and own["control_sent"], own
        other = _probe(nobody, eps)
        assert other == {
            **{f"{n}_connected": False for n in eps},
            **{f"{n}_unix": "EACCES" for n in eps},
            "frame_received": False,
            "picture_received": False,
            "control_sent": False,
        }
        assert call.proc.poll() is None, call.text()[-3000:]  # the call went on
    finally:
        shutil.rmtree(nobody[-2].split("=", 1)[1], ignore_errors=True)
        call.stop()


TCP_PROBE = r"""
import json, sys
import zmq
eps, ready = json.loads(sys.argv[1]), bytes.fromhex(sys.argv[2])
server_public = sys.argv[3].encode() if len(sys.argv) > 3 else None
ctx = zmq.Context()
kinds = {"frames": zmq.PULL, "infer": zmq.DEALER, "out": zmq.PULL, "control": zmq.PUSH}
socks = {}
for name, ep in eps.items():
    s = ctx.socket(kinds[name])
    s.linger = 0
    s.immediate = 1  # a send only goes to a connection whose handshake completed
    if server_public:  # a client of this run's link key, as the stages are
        s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
        s.curve_serverkey = server_public
    s.connect(ep)
    socks[name] = s
res = {"frame_received": bool(socks["frames"].poll(1000))}
res["picture_received"] = bool(socks["out"].poll(500))
for name, part in (("infer", ready), ("control", b"probe")):
    res[name + "_sent"] = bool(socks[name].poll(500, zmq.POLLOUT))
    if res[name + "_sent"]:
        socks[name].send(part)
res["work_received"] = bool(socks["infer"].poll(1000))
print(json.dumps(res))
"""


def _link_key_folder() -> Path | None:
    """The --link-keys folder a running launcher gave its stages (from their command lines), or
    None while no stage with it has started yet."""
    for _, line in _command_lines():
        args = line.split(b"\0")
        if b"--link-keys" in args:
            return Path(args[args.index(b"--link-keys") + 1].decode())
    return None


@needs_shared
def test_tcp_links_are_encrypted_with_a_key_only_this_run_has(tmp_path):
    """--links tcp (systems without Unix sockets): loopback ports are open to every account, so
    the links are CurveZMQ-encrypted under a key made for this run in the private folder. Without
    the key a peer completes no handshake: no frame, no picture, no work, no key command; with it
    (the positive control), the same probe gets all of them."""
    import msgpack

    call = _selfie_call("--links", "tcp", "--port-base", free_port_base())
    try:
        eps = call.links()
        assert all(e.startswith("tcp://127.0.0.1:") for e in eps.values())
        # the launcher logs the links before it starts the stages
        keys = wait_for(_link_key_folder, 30, "a stage started with --link-keys")
        assert stat.S_IMODE(keys.stat().st_mode) == 0o700
        assert stat.S_IMODE(keys.parent.stat().st_mode) == 0o700
        secret = keys / "link.key_secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        call.until(
            lambda: (_snapshot(keys.parent / "display.json") or (0, 0))[1] > 0, 90, "pictures"
        )
        ready = msgpack.packb({"p": "pcam", "v": 2, "kind": "ready", "worker": "probe"}).hex()
        probe = [sys.executable, "-c", TCP_PROBE, json.dumps(eps), ready]

        def run(*extra):
            r = subprocess.run([*probe, *extra], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        public = (keys / "link.key").read_text().split('public-key = "')[1].split('"')[0]
        assert run(public) == dict.fromkeys(
            ("frame_received", "picture_received", "infer_sent", "control_sent", "work_received"),
            True,
        )
        assert run() == dict.fromkeys(
            ("frame_received", "picture_received", "infer_sent", "control_sent", "work_received"),
            False,
        )
        assert call.proc.poll() is None, call.text()[-3000:]  # the call went on
    finally:
        call.stop()

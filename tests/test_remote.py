"""Workers on another host (a network namespace): encryption, keys, bandwidth, hostile input.

Every non-loopback link is CurveZMQ-encrypted and only workers whose public keys the compositor was
given get frames. Here the worker really runs on another host: a network namespace joined to this
one by a veth pair, so the compositor binds a non-loopback address exactly as it would on a LAN.
"""

import shutil
import socket
import subprocess
import sys

import numpy as np
import zmq

from common import protocol
from tests.conftest import (
    REPO,
    SELFIE,
    endpoints,
    env,
    launch_selfie,
    needs_shared,
    read_json,
    start_core,
    start_worker,
    stats_now,
    wait_for,
)

pytestmark = needs_shared

# Every blocking call has a timeout and the socket is closed before exit: CI once saw this script
# outlive its 30 s (nothing printed) on a slow host; a DEALER whose only peer refused it can block
# in send, and a context with an open socket can block the interpreter's exit.
INTRUDER = """
import sys, time, zmq, msgpack
ctx = zmq.Context(); s = ctx.socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.SNDTIMEO, 2000); s.connect(sys.argv[1])
try:
    s.send_multipart([msgpack.packb({"p": "pcam", "v": 1, "kind": "ready", "worker": "intruder"})])
except zmq.Again:
    pass  # refused before it could even queue: it receives nothing either way
n, end = 0, time.monotonic() + 4
while time.monotonic() < end:
    if s.poll(200):
        s.recv_multipart(); n += 1
print("received", n, flush=True)
s.close(); ctx.term()
"""


def make_keys(folder, worker):
    r = subprocess.run(
        [sys.executable, "-m", "inference", "keys", str(folder), "--worker", worker],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return folder / f"worker-{worker}"


def start_remote_pipeline(procs, tmp_path, port_base, here, keys):
    infer = f"tcp://{here}:{port_base + 1}"
    start_core(procs, port_base, tmp_path, "--keys", keys, "--remote-encoding", "jpeg", infer=infer)
    return infer


def test_remote_worker_with_keys_works_and_others_get_nothing(procs, tmp_path, port_base, netns):
    ns, here, _there = netns
    there = ("ip", "netns", "exec", ns)
    keys = tmp_path / "keys"
    bundle = make_keys(keys, "laptop")
    infer = start_remote_pipeline(procs, tmp_path, port_base, here, keys)
    start_worker(procs, infer, "--keys", bundle, name="laptop", prefix=there)
    wait_for(
        lambda: stats_now(tmp_path / "comp.json").get("masks_by_worker", {}).get("laptop", 0) > 5,
        40,
        "masks from the remote worker",
    )
    s = read_json(tmp_path / "comp.json")
    raw = 640 * 524 * 3  # the anchor clip at --width 640
    assert s["bytes_per_frame_to_workers"] < raw / 5  # JPEG on the wire
    assert s["bytes_per_mask"] < 640 * 524 / 2  # PNG masks back

    # A worker whose key the compositor was not given (right server key, own key pair).
    stranger = make_keys(tmp_path / "other", "stranger")
    shutil.copy(keys / "compositor.key", stranger / "compositor.key")
    w = start_worker(
        procs,
        infer,
        "--keys",
        stranger,
        "--stats-json",
        tmp_path / "stranger.json",
        name="stranger",
        prefix=there,
    )
    # A plain ZeroMQ peer without any keys, speaking our protocol.
    r = subprocess.run(
        [*there, sys.executable, "-c", INTRUDER, infer],
        capture_output=True,
        text=True,
        timeout=30,
        env=env(),
    )
    assert r.stdout.split() == ["received", "0"], r.stdout + r.stderr
    # The refused worker is told so (the handshake failure it sees), in one line, and stops.
    wait_for(lambda: w.poll() is not None, 30, "the refused worker to stop")
    assert w.returncode == 2
    log = w.log_path.read_text()
    assert "refused this worker's key" in log and "authorized/stranger.key" in log
    assert "Traceback" not in log and "reconnecting" not in log
    assert read_json(tmp_path / "stranger.json").get("frames_received", 0) == 0
    wait_for(
        lambda: stats_now(tmp_path / "comp.json").get("peers_refused", 0) >= 2,
        15,
        "both refusals counted",
    )
    s = read_json(tmp_path / "comp.json")
    assert "stranger" not in s["masks_by_worker"] and "intruder" not in s["masks_by_worker"]
    assert s["peers_refused"] >= 2
    assert "refused a connection" in (tmp_path / "compositor.log").read_text()
    # Garbage bytes from the other host to the encrypted port are survived too.
    with socket.create_connection((here, port_base + 1), timeout=5) as c:
        c.sendall(np.random.default_rng(1).bytes(100_000))
    before = read_json(tmp_path / "comp.json")["masks_by_worker"]["laptop"]
    wait_for(
        lambda: read_json(tmp_path / "comp.json")["masks_by_worker"]["laptop"] > before + 5,
        20,
        "the authorized worker to keep working",
    )


def test_worker_without_keys_for_a_remote_compositor_says_what_to_do(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference",
            "--connect",
            "tcp://192.0.2.1:5551",
            "--model",
            "selfie",
            "--model-dir",
            str(SELFIE),
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--keys" in r.stderr and "python -m inference keys" in r.stderr


def test_compositor_refuses_to_offer_frames_unencrypted_on_the_network(tmp_path, port_base):
    r = subprocess.run(
        [sys.executable, "-m", "compositor", "--infer-bind", f"tcp://0.0.0.0:{port_base}"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "must be encrypted" in r.stderr and "Traceback" not in r.stderr


def test_garbage_and_oversized_messages_to_every_port_are_survived(procs, tmp_path, port_base):
    ep = endpoints(port_base)
    start_core(procs, port_base, tmp_path, display_args=("--stats-json", tmp_path / "disp.json"))
    start_worker(procs, ep[1])
    wait_for(lambda: stats_now(tmp_path / "comp.json").get("masks_applied", 0) > 5, 40, "masks")
    rng = np.random.default_rng(0)
    for i in range(4):  # raw garbage at every bound port (capture's and the compositor's)
        with socket.create_connection(("127.0.0.1", port_base + i), timeout=5) as c:
            c.sendall(rng.bytes(200_000))
    ctx = zmq.Context()
    try:
        big = np.zeros(30_000_000, np.uint8)  # above the 25 MB limit of every socket
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(ep[1])
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(ep[3])
        for sock in (dealer, push):  # well-formed ZeroMQ, malformed for us, then oversized
            sock.send_multipart([b"\x93garbage"])
            sock.send_multipart([b"\x83\xa1p\xa4pcam\xa1v\x63\xa4kind\xa5ready"])  # version 99
            sock.send_multipart(
                protocol.encode(protocol.Mask(frame_id="x", image=np.zeros((4, 4), np.uint8)))
            )
            sock.send(big, copy=False)
        s0 = wait_for(
            lambda: (s := read_json(tmp_path / "comp.json")).get("bad_messages", 0) >= 6 and s,
            15,
            "the bad messages counted",
        )
    finally:
        ctx.destroy(0)
    assert all(p.poll() is None for p in procs.procs), "a stage died"
    wait_for(
        lambda: (
            (s := read_json(tmp_path / "comp.json"))["frames_composited"]
            > s0["frames_composited"] + 20
            and s["masks_applied"] > s0["masks_applied"]
        ),
        20,
        "frames and masks to go on after the attack",
    )
    assert all(p.poll() is None for p in procs.procs), "a stage died"
    assert read_json(tmp_path / "disp.json")["frames_displayed"] > 0
    comp_log = (tmp_path / "compositor.log").read_text()
    assert "dropped a bad message" in comp_log and "Traceback" not in comp_log


def test_launch_with_a_network_bind_keys_its_local_worker_too(tmp_path, port_base, netns):
    _ns, here, _there = netns
    keys = tmp_path / "keys"
    make_keys(keys, "desktop")
    r, stats = launch_selfie(
        tmp_path, port_base, "--infer-bind", f"tcp://{here}:{port_base + 1}", "--keys", keys
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (keys / "authorized" / "local.key").is_file()  # made for the local worker
    s = read_json(stats)
    assert s["masks_by_worker"].get("inference", 0) > 5
    assert s["stages"]["compositor"].get("peers_refused", 0) == 0


def test_first_run_with_a_new_key_folder_creates_the_keys_and_says_what_to_copy(
    tmp_path, port_base
):
    keys = tmp_path / "keys"
    # keys given: encrypted even on loopback
    r, stats = launch_selfie(tmp_path, port_base, "--keys", keys)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"copy {keys / 'worker-remote'} to the worker machine" in r.stdout
    for f in (
        "compositor.key_secret",
        "authorized/remote.key",
        "worker-remote/worker.key_secret",
        "worker-remote/compositor.key",
        "authorized/local.key",
    ):
        assert (keys / f).is_file(), f
    assert read_json(stats)["masks_by_worker"].get("inference", 0) > 5  # local worker, CURVE

"""The inference worker as a real process against a real ROUTER that plays the compositor.

The test speaks ``common.protocol`` on a real ZeroMQ ROUTER (optionally CURVE + ZAP from
``common.security.server``), so the worker is checked on the wire exactly as the compositor sees
it: READY, frames in, masks out, heartbeats, Lazy Pirate reconnects, ``--mask-interval`` rests,
refused keys. Every wait is on an event with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from common import protocol, security
from tests.conftest import (
    REPO,
    SELFIE,
    env,
    needs_shared,
    read_json,
    start_worker,
    stats_now,
    wait_for,
)

FROM_WORKER = (protocol.Ready, protocol.Mask)
Got = tuple[bytes, protocol.Message, float]  # identity, message, arrival time


class FakeCompositor:
    """A ROUTER speaking the worker protocol, driven step by step by a test."""

    def __init__(self, endpoint: str, keys: Path | None = None) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.auth = security.server(self.ctx, self.router, endpoint, keys)
        self.router.bind(endpoint)
        self.next_id = 0

    def recv(self, timeout: float, what: str) -> Got:
        """(identity, message, arrival time) of the next worker message, within ``timeout``."""
        if not self.router.poll(int(timeout * 1000)):
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        identity, *parts = self.router.recv_multipart()
        return identity, protocol.decode(parts, FROM_WORKER), time.monotonic()

    def expect(self, kind: type, timeout: float, what: str) -> Got:
        identity, msg, at = self.recv(timeout, what)
        assert isinstance(msg, kind), f"wanted {kind.__name__} ({what}), got {msg}"
        return identity, msg, at

    def frame(self, identity: bytes, image: np.ndarray, stream: int = 7) -> tuple[int, float]:
        """Send the next numbered frame; returns (frame_id, when sent). The time is taken before
        the send: taken after it, a test thread descheduled in between (a loaded CI machine)
        stamped the frame later than the worker received it, and a lower bound counted from it
        came out a few ms short."""
        self.next_id += 1
        msg = protocol.Frame(frame_id=self.next_id, ts=time.time(), stream=stream, image=image)
        sent = time.monotonic()
        self.router.send_multipart([identity, *protocol.encode(msg)])
        return self.next_id, sent

    def heartbeat(self, identity: bytes) -> None:
        self.router.send_multipart([identity, *protocol.encode(protocol.Heartbeat())])

    def close(self) -> None:
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(0)


@pytest.fixture
def comp(port_base):
    c = FakeCompositor(f"tcp://127.0.0.1:{port_base}")
    c.endpoint = f"tcp://127.0.0.1:{port_base}"
    yield c
    c.close()


def picture(h: int = 288, w: int = 352) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def run_worker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference", *map(str, args)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- the conversation


@needs_shared
def test_ready_frame_mask_heartbeat_on_the_wire(procs, tmp_path, comp):
    start_worker(procs, comp.endpoint, "--stats-json", tmp_path / "w.json", name="w1")
    who, ready, _ = comp.expect(protocol.Ready, 60, "READY")
    assert (ready.worker, ready.model) == ("w1", "selfie")
    image = picture(720, 1280)
    fid, _ = comp.frame(who, image, stream=42)
    _, mask, _ = comp.expect(protocol.Mask, 30, "the mask")
    assert (mask.frame_id, mask.stream, mask.worker) == (fid, 42, "w1")
    assert mask.image.shape == (144, 256) and mask.image.dtype == np.uint8  # the model grid
    assert mask.infer_ms > 0
    comp.heartbeat(who)  # an idle worker answers a heartbeat with READY
    again, ready, _ = comp.expect(protocol.Ready, 10, "READY answering the heartbeat")
    assert again == who
    wait_for(lambda: stats_now(tmp_path / "w.json").get("masks_sent") == 1, 10, "worker stats")


@needs_shared
def test_silent_compositor_makes_the_worker_reconnect(procs, tmp_path, comp):
    start_worker(procs, comp.endpoint, "--liveness", "1", name="w1")
    first, _, t0 = comp.expect(protocol.Ready, 60, "READY")
    # no heartbeat, no frame: after --liveness the worker opens a new socket and says READY again
    second, _, t1 = comp.expect(protocol.Ready, 15, "READY on a new socket")
    assert second != first and t1 - t0 >= 1.0
    fid, _ = comp.frame(second, picture())
    _, mask, _ = comp.expect(protocol.Mask, 30, "a mask on the new socket")
    assert mask.frame_id == fid


@needs_shared
def test_bad_messages_are_dropped_and_counted_not_fatal(procs, tmp_path, comp):
    w = start_worker(procs, comp.endpoint, "--stats-json", tmp_path / "w.json", name="w1")
    who, _, _ = comp.expect(protocol.Ready, 60, "READY")
    comp.router.send_multipart([who, b"\x93garbage"])
    comp.router.send_multipart([who, *protocol.encode(protocol.Ready(worker="x"))])  # wrong kind
    fid, _ = comp.frame(who, picture())
    _, mask, _ = comp.expect(protocol.Mask, 30, "a mask after the garbage")
    assert mask.frame_id == fid and w.poll() is None
    assert "dropped a bad message" in w.log_path.read_text()


@needs_shared
def test_frames_that_queued_up_get_one_mask_for_the_newest(procs, tmp_path, comp):
    """A worker handed frames faster than it answers (a READY crossing a hand-out) answers only
    the newest: answering each in turn would keep the backlog forever."""
    start_worker(procs, comp.endpoint, "--stats-json", tmp_path / "w.json", name="w1")
    who, _, _ = comp.expect(protocol.Ready, 60, "READY")
    image = picture(720, 1280)
    ids = [comp.frame(who, image)[0] for _ in range(6)]  # a burst, sent within a millisecond
    answered = []
    while not answered or answered[-1] != ids[-1]:
        _, mask, _ = comp.expect(protocol.Mask, 30, "masks for the burst")
        answered.append(mask.frame_id)
    # the first (taken alone), then the newest of those that queued meanwhile (the receive queue
    # holds a few: at most one more batch); answered one by one it would be all six
    assert len(answered) <= 3, answered
    assert not comp.router.poll(500)  # nothing more: no backlog being worked through
    s = wait_for(lambda: (s := stats_now(tmp_path / "w.json")).get("masks_sent") and s, 10, "stats")
    assert s["frames_skipped"] == 6 - len(answered)


# --------------------------------------------------------------------------- --mask-interval


@needs_shared
def test_mask_interval_rests_before_asking_and_keeps_masks_fresh(procs, tmp_path, comp):
    """One mask per S seconds: the mask goes out at once, the next READY only S after the start
    of the forward pass; a frame handed over during the rest is declined, not segmented late."""
    interval = 2.0
    start_worker(
        procs,
        comp.endpoint,
        "--mask-interval",
        interval,
        "--stats-json",
        tmp_path / "w.json",
        name="w1",
    )
    who, _, _ = comp.expect(protocol.Ready, 60, "READY")
    comp.frame(who, picture())
    comp.expect(protocol.Mask, 30, "a warm-up mask")
    comp.expect(protocol.Ready, interval + 10, "READY after the warm-up rest")
    fid1, sent1 = comp.frame(who, picture())
    _, m1, got1 = comp.expect(protocol.Mask, 30, "the first mask")
    assert m1.frame_id == fid1
    assert got1 - sent1 < interval  # sent as soon as computed, not after the rest
    # what the compositor does on a mask: the worker is idle to it, so it gets the newest frame
    declined, _ = comp.frame(who, picture())
    _, ready, ready_at = comp.expect(protocol.Ready, interval + 10, "READY at the end of the rest")
    assert ready_at - sent1 >= interval  # exact bound: the rest starts at the forward pass
    fid3, _ = comp.frame(who, picture())
    _, m3, _ = comp.expect(protocol.Mask, 30, "the next mask")
    assert m3.frame_id == fid3 != declined
    wait_for(
        lambda: stats_now(tmp_path / "w.json").get("frames_declined", 0) >= 1,
        10,
        "the declined frame counted",
    )


@needs_shared
def test_a_long_rest_keeps_the_link_alive_without_reconnecting(procs, tmp_path, comp):
    """A rest longer than --liveness: the worker says READY every keep-alive period (answered with
    a frame, as the real compositor would, and declined); no reconnect, same socket throughout."""
    interval, liveness = 3.0, 1.0
    start_worker(
        procs,
        comp.endpoint,
        "--mask-interval",
        interval,
        "--liveness",
        liveness,
        "--stats-json",
        tmp_path / "w.json",
        name="w1",
    )
    who, _, _ = comp.expect(protocol.Ready, 60, "READY")
    fid1, sent1 = comp.frame(who, picture())
    _, m1, _ = comp.expect(protocol.Mask, 30, "the first mask")
    assert m1.frame_id == fid1
    comp.frame(who, picture())  # handed over on the mask: declined
    frames_sent = {}
    while True:
        ident, msg, at = comp.recv(interval + 15, "keep-alive READYs, then a mask")
        assert ident == who, "the worker reconnected during its rest"
        if isinstance(msg, protocol.Mask):
            break
        fid, frames_sent[fid] = comp.frame(who, picture())  # the compositor's answer to READY
    # the frame segmented is the one sent after the rest, not one handed over during it
    assert frames_sent[msg.frame_id] - sent1 >= interval
    assert len(frames_sent) >= 3  # keep-alives every --liveness s during the 3 s rest, then READY
    s = read_json(tmp_path / "w.json")
    assert s.get("reconnects", 0) == 0 and s["frames_declined"] >= 2


# --------------------------------------------------------------------------- refused, unknown


def _bundle(tmp_path: Path, name: str) -> Path:
    return security.make_keys(tmp_path / "keys", name)


@needs_shared
def test_a_refused_worker_says_so_and_what_to_copy_where(tmp_path, port_base):
    keys = tmp_path / "keys"
    _bundle(tmp_path, "known")
    stranger = security.make_keys(tmp_path / "other", "stranger")
    shutil.copy(keys / "compositor.key", stranger / "compositor.key")  # right server, own key
    endpoint = f"tcp://127.0.0.1:{port_base}"
    comp = FakeCompositor(endpoint, keys)
    try:
        t0 = time.monotonic()
        r = run_worker("--connect", endpoint, "--keys", stranger, "--model", "selfie",
                       "--model-dir", SELFIE, "--name", "stranger", timeout=90)  # fmt: skip
        assert time.monotonic() - t0 < 60
        assert not comp.router.poll(0), "a refused worker got a message through"
    finally:
        comp.close()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    line = [x for x in r.stderr.splitlines() if "error:" in x]
    assert len(line) == 1 and "refused this worker's key" in line[0]
    assert f"{stranger}/worker.key" in line[0] and "authorized/stranger.key" in line[0]


@needs_shared
def test_a_worker_with_the_wrong_compositor_key_says_so(tmp_path, port_base):
    keys = tmp_path / "keys"
    bundle = _bundle(tmp_path, "known")
    other = security.make_keys(tmp_path / "other", "x")
    shutil.copy(tmp_path / "other" / "compositor.key", bundle / "compositor.key")
    endpoint = f"tcp://127.0.0.1:{port_base}"
    comp = FakeCompositor(endpoint, keys)
    try:
        r = run_worker("--connect", endpoint, "--keys", bundle, "--model", "selfie",
                       "--model-dir", SELFIE, timeout=90)  # fmt: skip
    finally:
        comp.close()
    assert other.is_dir() and r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "compositor.key is not that compositor's public key" in r.stderr


def test_a_host_name_that_does_not_resolve_is_one_line(tmp_path):
    r = run_worker("--connect", "tcp://no-such-host.invalid:5551", "--model", "selfie")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "does not resolve" in r.stderr


def test_help_shows_defaults_and_model_choices():
    r = run_worker("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "{maskrcnn,selfie}" in text and "--mask-interval S" in text
    assert "(default: maskrcnn)" in text and "(default: 10)" in text  # --nice


def test_bad_flags_are_one_line():
    for args in (["--mask-interval", "-1"], ["--proposals", "0"], ["--connect", "nope"]):
        r = run_worker(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_worker_keys_folder_checks(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    r = run_worker("--connect", "tcp://192.0.2.1:5551", "--keys", not_a_folder)
    assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr
    bundle = _bundle(tmp_path, "w")
    (bundle / "worker.key_secret").write_text("public-key = 'short'\n")
    r = run_worker("--connect", "tcp://192.0.2.1:5551", "--keys", bundle)
    assert r.returncode == 2 and "worker.key_secret" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_key_folder_is_one_line(tmp_path):
    bundle = _bundle(tmp_path, "w")
    bundle.chmod(0)
    try:
        r = run_worker("--connect", "tcp://192.0.2.1:5551", "--keys", bundle)
    finally:
        bundle.chmod(0o700)
    assert r.returncode == 2 and "not readable" in r.stderr and "Traceback" not in r.stderr

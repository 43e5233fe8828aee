"""The compositor's real loop on real ZeroMQ sockets, in this process (inproc, about a second):
a fake capture, worker and display talk to it in the wire format. What a hostile or broken worker
sends is dropped and counted, never applied and never a crash (issue 10); a flood of privacy
commands is a few log lines; End flows through."""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import msgpack
import numpy as np
import zmq

from common import protocol
from common.runtime import Runtime
from compositor.config import CompositorConfig
from compositor.links import open_links
from compositor.loop import run_lockstep, run_realtime
from compositor.run import build
from tests.conftest import wait_for

H, W = 72, 128
DEADLINE_S = 20.0  # generous: two shared cores
BIG = (360, 640)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def frame_parts(i, stream=7, shape=(H, W)):
    image = np.full((*shape, 3), i % 256, np.uint8)
    return protocol.encode(protocol.Frame(frame_id=i, ts=time.time(), stream=stream, image=image))


def mask_parts(i, shape=(H, W), stream=7, infer_ms=5.0):
    m = protocol.Mask(frame_id=i, stream=stream, worker="W", infer_ms=infer_ms)
    return protocol.encode(protocol.Mask(**{**m.__dict__, "image": np.zeros(shape, np.uint8)}))


def bad_infer_ms_mask(i):
    """The mask that used to crash the compositor: infer_ms is a string."""
    header = dict(
        p=protocol.MAGIC,
        v=protocol.VERSION,
        kind="mask",
        frame_id=i,
        stream=7,
        worker="W",
        infer_ms="12.5",
        shape=[H, W],
        dtype="uint8",
        enc="raw",
    )
    return [msgpack.packb(header), bytes(H * W)]


def recv(sock, kinds, deadline):
    while time.monotonic() < deadline:
        if sock.poll(100):
            msg = protocol.decode(sock.recv_multipart())
            if isinstance(msg, kinds):
                return msg
    raise AssertionError(f"no {kinds} before the deadline")


@contextmanager
def running(tag: str, runner=run_realtime, **config) -> Iterator[SimpleNamespace]:
    """The compositor's real loop (``runner``) in a thread on inproc sockets, with a capture PUSH
    bound for it; stopped and cleaned up at the end. Yields ctx, ep, capture, core, log, thread
    and result (the loop's return value, once it returned)."""
    ctx = zmq.Context()
    log = logging.getLogger(f"test-compositor-{tag}")
    rt = Runtime(name="compositor", log=log, ctx=ctx)
    ep = {k: f"inproc://{k}-{id(rt)}" for k in ("frames", "infer", "out", "control")}
    capture = ctx.socket(zmq.PUSH)
    capture.bind(ep["frames"])
    settings = CompositorConfig(
        frames=ep["frames"], infer_bind=ep["infer"], out_bind=ep["out"],
        control_bind=ep["control"], **config,
    )  # fmt: skip
    core = build(settings, rt)
    links = open_links(settings, ctx)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(runner(core, links, rt)))
    thread.start()
    try:
        yield SimpleNamespace(
            ctx=ctx, ep=ep, capture=capture, core=core, log=log, thread=thread, result=result
        )
    finally:
        rt.stop()
        thread.join(DEADLINE_S)
        links.close()
        ctx.destroy(0)


def connect(c: SimpleNamespace, kind: int, link: str) -> zmq.Socket:
    """A socket of the fake display or worker, connected to the compositor's ``link``."""
    sock = c.ctx.socket(kind)
    sock.connect(c.ep[link])
    return sock


def test_loop_drops_and_counts_what_a_worker_must_not_send(tmp_path):
    handler = ListHandler()
    with running("loop", max_mask_age=60.0) as c:
        c.log.addHandler(handler)
        c.log.setLevel(logging.INFO)
        try:
            drops_and_counts(c, handler)
        finally:
            c.log.removeHandler(handler)


def drops_and_counts(c: SimpleNamespace, handler: ListHandler) -> None:
    capture, core = c.capture, c.core
    display = connect(c, zmq.PULL, "out")
    control = connect(c, zmq.PUSH, "control")
    worker = connect(c, zmq.DEALER, "infer")
    deadline = time.monotonic() + DEADLINE_S
    worker.send_multipart(protocol.encode(protocol.Ready(worker="W", model="fake")))

    capture.send_multipart(frame_parts(1))
    out = recv(display, protocol.Output, deadline)
    assert (out.frame_id, out.hidden, out.fail_closed) == (1, "waiting", True)
    handed = recv(worker, protocol.Frame, deadline)
    assert handed.frame_id == 1 and handed.image.shape == (H, W, 3)

    for parts in (
        mask_parts(2**63 - 1),  # forged id: would win "newest" forever
        mask_parts(5),  # a frame never handed out
        mask_parts(1, stream=8),
        mask_parts(1, shape=(2 * H, 2 * W)),
        bad_infer_ms_mask(1),
        [b"not msgpack at all"],
    ):
        worker.send_multipart(parts)
    worker.send_multipart(mask_parts(1))  # the genuine one
    i = 2
    while True:  # frames until one is shown with the mask
        capture.send_multipart(frame_parts(i))
        i += 1
        if (out := recv(display, protocol.Output, deadline)).hidden == "":
            break
    assert not out.fail_closed and out.mask_age_ms is not None
    assert core.picture.slot.applied.frame_id == 1
    assert core.stats.counts["masks_applied"] == 1
    assert core.rejected == {"not_handed_out": 2, "wrong_stream": 1, "mask_too_large": 1}
    assert core.bad.count == 2  # the string infer_ms and the garbage
    assert core.stats.series["motion_ms"]  # shown frames went through motion compensation

    for _ in range(10_001):
        control.send_multipart(protocol.encode(protocol.Control(privacy="toggle")))
    while core.privacy.on or core.privacy.unreported > 0:  # the loop works through them
        assert time.monotonic() < deadline, "privacy commands not applied"
        capture.send_multipart(frame_parts(i))
        i += 1
        recv(display, protocol.Output, deadline)
    capture.send_multipart(protocol.encode(protocol.End(stream=7, frame_id=i - 1)))
    assert recv(display, protocol.End, deadline).frame_id == i - 1
    c.thread.join(DEADLINE_S)
    assert c.result == [0]
    privacy_lines = [line for line in handler.lines if line.startswith("privacy")]
    assert 1 <= len(privacy_lines) <= 1 + DEADLINE_S, privacy_lines  # not 10,001
    assert privacy_lines[-1].startswith("privacy off")


def test_lockstep_every_frame_waits_for_its_own_mask_from_its_worker(tmp_path):
    # max_mask_age: never applies in lock-step
    with running("lockstep", run_lockstep, max_mask_age=0.001, lockstep=True) as c:
        display = connect(c, zmq.PULL, "out")
        a, b = connect(c, zmq.DEALER, "infer"), connect(c, zmq.DEALER, "infer")
        for sock, name in ((a, "A"), (b, "B")):
            sock.send_multipart(protocol.encode(protocol.Ready(worker=name)))
        deadline = time.monotonic() + DEADLINE_S
        for i in range(1, 4):
            c.capture.send_multipart(frame_parts(i))
        poller = zmq.Poller()
        poller.register(a, zmq.POLLIN)
        poller.register(b, zmq.POLLIN)
        for i in range(1, 4):
            while True:  # the worker the frame went to (heartbeats may come first)
                assert time.monotonic() < deadline, f"frame {i} not handed out"
                ready = dict(poller.poll(100))
                sock = a if a in ready else b if b in ready else None
                if sock is not None:
                    msg = protocol.decode(sock.recv_multipart())
                    if isinstance(msg, protocol.Frame):
                        break
            assert msg.frame_id == i
            other = b if sock is a else a
            other.send_multipart(mask_parts(i))  # from the wrong worker: must not release it
            assert not display.poll(300)  # still waiting for its own mask
            sock.send_multipart(mask_parts(i))
            out = recv(display, protocol.Output, deadline)
            assert (out.frame_id, out.hidden, out.fail_closed) == (i, "", False)
        assert c.core.rejected == {"wrong_worker": 3}
        c.capture.send_multipart(protocol.encode(protocol.End(stream=7, frame_id=3)))
        assert recv(display, protocol.End, deadline).frame_id == 3
        c.thread.join(DEADLINE_S)
        assert c.result == [0]


def test_no_motion_turns_motion_compensation_off():
    rt = Runtime(name="compositor", log=logging.getLogger("test"), ctx=None)  # type: ignore[arg-type]
    assert build(CompositorConfig(), rt).picture.motion is not None
    assert build(CompositorConfig(motion=False), rt).picture.motion is None
    assert build(CompositorConfig(lockstep=True), rt).picture.motion is None


def test_the_alpha_goes_to_the_display_only_while_its_mask_view_asks():
    with running("view", max_mask_age=60.0) as c:
        display = connect(c, zmq.PULL, "out")
        control = connect(c, zmq.PUSH, "control")
        worker = connect(c, zmq.DEALER, "infer")
        deadline = time.monotonic() + DEADLINE_S
        worker.send_multipart(protocol.encode(protocol.Ready(worker="W", model="fake")))
        c.capture.send_multipart(frame_parts(1))
        assert recv(display, protocol.Output, deadline).alpha is None  # not asked for
        recv(worker, protocol.Frame, deadline)
        half = np.zeros((H, W), np.uint8)
        half[:, : W // 2] = 255  # the person on the left
        m = protocol.Mask(frame_id=1, stream=7, worker="W", infer_ms=5.0, image=half)
        worker.send_multipart(protocol.encode(m))
        control.send_multipart(protocol.encode(protocol.View(mask=True)))
        i, out = 2, None
        while out is None or out.alpha is None or out.hidden:
            c.capture.send_multipart(frame_parts(i))
            i += 1
            out = recv(display, protocol.Output, deadline)
        assert out.alpha.shape == (H, W) and out.mask_fps is not None and out.mask_fps > 0
        assert out.alpha[:, : W // 2 - 8].min() == 255 and out.alpha[:, W // 2 + 8 :].max() == 0
        control.send_multipart(protocol.encode(protocol.View(mask=False)))
        while out.alpha is not None:
            c.capture.send_multipart(frame_parts(i))
            i += 1
            out = recv(display, protocol.Output, deadline)


def test_a_picture_waiting_for_a_slow_display_is_not_overwritten_by_later_frames():
    """The compositor renders into buffers it reuses; a picture queued for the display must keep
    its own pixels (sent zero-copy, the next frame's render would change it in the queue).
    640x360: pyzmq copies messages under 64 kB anyway, so small frames cannot show this."""
    with running("queue", max_mask_age=60.0) as c:
        display = connect(c, zmq.PULL, "out")
        deadline = time.monotonic() + DEADLINE_S
        c.capture.send_multipart(frame_parts(40, shape=BIG))
        first = recv(display, protocol.Output, deadline)  # connected; now the display stalls
        assert first.hidden == "waiting" and abs(int(first.image.mean()) - 40) <= 1
        for i in range(41, 60):  # rendered (all hidden: no worker) while the display stalls
            c.capture.send_multipart(frame_parts(i, shape=BIG))
        n = c.core.stats.counts
        wait_for(lambda: n["frames_received"] + n["frames_dropped"] >= 20, 20, "frames rendered")
        # a deadline of its own: under load the rendering above took most of the first one
        deadline = time.monotonic() + DEADLINE_S
        out = recv(display, protocol.Output, deadline)  # queued while the display stalled
        mean = float(out.image.mean())
        assert abs(mean - out.frame_id) <= 1, (out.frame_id, mean)
        # One more frame, so that a second Output exists whatever the queue held: a loaded
        # compositor may take frames 41-59 in one or two batches (the older ones dropped
        # unrendered), and the newest picture is dropped, not queued, while the queue is full.
        c.capture.send_multipart(frame_parts(60, shape=BIG))
        out = recv(display, protocol.Output, deadline)
        mean = float(out.image.mean())
        assert abs(mean - out.frame_id) <= 1, (out.frame_id, mean)

"""Newest-frame logic on real ZeroMQ sockets, and the compositor's worker and mask bookkeeping."""

import time

import numpy as np
import zmq

from common import protocol, sockets
from compositor.run import AppliedMask
from compositor.workers import WorkerPool


def _frame(i):
    return protocol.encode(protocol.FRAME, np.full((8, 8, 3), i, np.uint8), frame_id=i, ts=0.0)


def test_slow_consumer_builds_no_queue_and_gets_the_newest():
    ctx = zmq.Context()
    try:
        push = sockets.make_socket(ctx, zmq.PUSH, bind="tcp://127.0.0.1:*")
        endpoint = push.getsockopt(zmq.LAST_ENDPOINT).decode()
        pull = sockets.make_socket(ctx, zmq.PULL, connect=endpoint)
        time.sleep(0.2)  # let the connection come up
        sent = [i for i in range(200) if sockets.try_send(push, _frame(i))]
        assert len(sent) < 200  # the sender dropped instead of queueing
        msgs = []
        while pull.poll(300):  # read until nothing more arrives
            msgs += [protocol.decode(p) for p in sockets.drain(pull)]
        ids = [m.header["frame_id"] for m in msgs]
        assert ids == sent  # nothing reordered; what was not dropped arrives
        assert ids[-1] == sent[-1]  # a drain ends on the newest frame: that is what is used
        assert sockets.drain(pull) == []
    finally:
        ctx.destroy(0)


def test_send_blocking_gives_back_pressure_without_loss():
    ctx = zmq.Context()
    try:
        push = sockets.make_socket(ctx, zmq.PUSH, bind="tcp://127.0.0.1:*")
        endpoint = push.getsockopt(zmq.LAST_ENDPOINT).decode()
        pull = sockets.make_socket(ctx, zmq.PULL, connect=endpoint)
        got = []
        for i in range(30):
            assert sockets.send_blocking(push, _frame(i), lambda: False)
            while pull.poll(0):
                got.append(protocol.decode(sockets.recv_parts(pull)).header["frame_id"])
        while pull.poll(500):
            got.append(protocol.decode(sockets.recv_parts(pull)).header["frame_id"])
        assert got == list(range(30))
        # with nobody reading, it gives up when asked to stop instead of hanging
        pull.close(0)
        for i in range(10):
            if not sockets.send_blocking(push, _frame(i), lambda: True):
                break
        else:
            raise AssertionError("send_blocking ignored the stop request")
    finally:
        ctx.destroy(0)


def test_mask_state_newest_frame_id_wins_per_stream():
    m = AppliedMask(stream=5, frame_id=10, ts=1.0)
    assert not m.newer({"stream": 5, "frame_id": 9})
    assert not m.newer({"stream": 5, "frame_id": 10})
    assert m.newer({"stream": 5, "frame_id": 11})
    assert m.newer({"stream": 6, "frame_id": 0})  # a restarted capture starts a new stream


def test_worker_pool_least_recently_idle_first_and_timeouts():
    pool = WorkerPool(timeout=2.0, liveness=3.0)
    assert pool.ready(b"a", "A", now=0.0) and pool.ready(b"b", "B", now=0.5)
    assert not pool.ready(b"a", "A", now=0.6)  # known worker
    first = pool.take_idle()
    pool.assign(first, 1, now=1.0)
    assert first == b"a"  # idle since 0.0: a heartbeat reply (0.6) does not reset its place
    assert pool.busy_with(1) and not pool.busy_with(2)
    assert pool.expire(now=2.5) == []
    gone = pool.expire(now=3.1)  # a busy > 2 s
    assert [s.name for s in gone] == ["A"] and pool.timeouts == 1
    assert pool.expire(now=3.7)[0].name == "B"  # idle and silent > 3 s
    assert len(pool) == 0 and pool.take_idle() is None

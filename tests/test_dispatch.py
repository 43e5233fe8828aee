"""Hand-outs without sockets or processes (milliseconds): the worker pool, the in-flight table and
which masks are genuine, pacing by the round trip, heartbeats. Time is given, never read."""

import numpy as np

from common import protocol
from compositor.dispatch import (
    HEARTBEAT_S,
    NOT_HANDED_OUT,
    WRONG_STREAM,
    WRONG_WORKER,
    Dispatcher,
)
from compositor.workers import WorkerPool


def frame(i, stream=7):
    return protocol.Frame(
        frame_id=i, ts=100.0 + i, stream=stream, image=np.zeros((9, 16, 3), np.uint8)
    )


def dispatcher(*workers, timeout=10.0, max_in_flight=8):
    d = Dispatcher(WorkerPool(timeout=timeout, liveness=3.0), max_in_flight)
    for i, w in enumerate(workers):
        d.ready(w, w.decode().upper(), now=i * 0.01)
    return d


def hand(d, frame_, now, pace=True):
    w = d.next_worker(now, pace=pace)
    if w is not None:
        d.handed(w, frame_, now)
    return w


def test_longest_idle_worker_gets_the_frame():
    d = dispatcher(b"a", b"b")
    assert hand(d, frame(1), now=1.0) == b"a"
    assert hand(d, frame(2), now=1.0) == b"b"  # no round trip measured yet: no pacing
    assert hand(d, frame(3), now=1.0) is None  # both busy
    assert d.holds(1) and d.holds(2) and not d.holds(3)


def test_genuine_mask_gives_back_the_compositors_own_record():
    d = dispatcher(b"a")
    f = frame(5)
    hand(d, f, now=1.0)
    rec, reason = d.claim(b"a", 5, 7, now=1.5)
    assert reason == "" and rec.frame is f and rec.frame.ts == f.ts and rec.identity == b"a"
    assert d.round_trip_s == 0.5
    # the record is used up: the same mask again (a replay) is not genuine
    assert d.claim(b"a", 5, 7, now=1.6) == (None, NOT_HANDED_OUT)


def test_forged_and_misdirected_masks_are_refused_and_change_nothing():
    d = dispatcher(b"a", b"b")
    hand(d, frame(5), now=1.0)  # to a
    before = dict(d.in_flight)
    assert d.claim(b"a", 2**63 - 1, 7, now=1.1) == (None, NOT_HANDED_OUT)
    assert d.claim(b"a", 4, 7, now=1.1) == (None, NOT_HANDED_OUT)  # never handed out
    assert d.claim(b"b", 5, 7, now=1.1) == (None, WRONG_WORKER)  # a's frame, from b
    assert d.claim(b"x", 5, 7, now=1.1) == (None, WRONG_WORKER)  # from a stranger
    assert d.claim(b"a", 5, 8, now=1.1) == (None, WRONG_STREAM)
    assert d.in_flight == before and d.round_trip_s == 0.0
    assert d.claim(b"a", 5, 7, now=1.2)[1] == ""  # the real mask is still accepted


def test_a_worker_handed_two_frames_may_answer_both_in_order():
    """Its READY answering a heartbeat crossed a hand-out: it got frame 1, then frame 2 too."""
    d = dispatcher(b"a")
    hand(d, frame(1), now=0.0)
    d.ready(b"a", "A", now=0.01)  # the answer to a heartbeat sent just before frame 1
    hand(d, frame(2), now=0.02)
    assert d.claim(b"a", 1, 7, now=0.5)[1] == ""  # both are genuine ...
    d.ready(b"a", "A", now=0.5)
    hand(d, frame(3), now=0.5)
    assert d.claim(b"a", 2, 7, now=1.0)[1] == ""  # ... in the order they were handed
    assert d.claim(b"a", 3, 7, now=1.5)[1] == ""


def test_a_mask_settles_the_frames_its_worker_was_handed_before():
    """A resting worker declines a frame; its next mask is for a later one."""
    d = dispatcher(b"a")
    hand(d, frame(1), now=0.0)
    d.ready(b"a", "A", now=0.1)
    hand(d, frame(2), now=0.1)
    assert d.claim(b"a", 2, 7, now=0.5)[1] == ""
    assert not d.in_flight  # frame 1 will never be answered: forgotten
    assert d.claim(b"a", 1, 7, now=0.6) == (None, NOT_HANDED_OUT)


def test_late_mask_of_a_timed_out_worker_is_still_genuine():
    d = dispatcher(b"a", timeout=2.0)
    hand(d, frame(1), now=0.0)
    assert [s.name for s in d.expire(now=2.5)] == ["A"]
    assert not d.holds(1)  # lock-step hands the frame out again
    rec, reason = d.claim(b"a", 1, 7, now=3.0)
    assert reason == "" and rec.frame.frame_id == 1


def test_in_flight_table_is_bounded():
    workers = [bytes([65 + i]) for i in range(6)]
    d = dispatcher(*workers, max_in_flight=3, timeout=1.0)
    for i in range(3):
        assert hand(d, frame(i), now=0.0) is not None
    assert hand(d, frame(3), now=0.0) is None  # three frames out: no more
    assert d.busy() == 3
    d.expire(now=1.5)  # the three busy workers time out: their records stay as late ones
    assert len(d.in_flight) == 3 and d.busy() == 0
    for w in workers[3:]:
        d.ready(w, "", now=1.5)  # idle ones answered their heartbeats
    for i in range(4, 7):
        assert hand(d, frame(i), now=2.0) is not None
        assert len(d.in_flight) <= 3  # late records make room, oldest first
    assert sorted(r.frame.frame_id for r in d.in_flight.values()) == [4, 5, 6]


def test_records_per_worker_are_bounded():
    d = dispatcher(b"a")
    for i in range(10):  # a worker that never answers but keeps saying READY
        d.ready(b"a", "A", now=i)
        hand(d, frame(i), now=i)
    assert sorted(k[1] for k in d.in_flight) == [7, 8, 9]


def test_lost_worker_forgets_its_frame():
    d = dispatcher(b"a")
    hand(d, frame(1), now=0.0)
    assert d.lost(b"a").name == "A"
    assert d.claim(b"a", 1, 7, now=0.1) == (None, NOT_HANDED_OUT)
    assert len(d.pool) == 0 and d.pool.timeouts == 1


def test_several_workers_are_paced_by_the_round_trip():
    d = dispatcher(b"a", b"b")
    hand(d, frame(1), now=0.0)
    d.claim(b"a", 1, 7, now=1.0)  # round trip 1 s
    d.ready(b"a", "A", now=1.0)
    assert hand(d, frame(2), now=1.0) == b"b"
    # the next hand-out waits 0.7 x round trip / 2 workers = 0.35 s
    assert d.paced(now=1.3) and hand(d, frame(3), now=1.3) is None
    assert not d.paced(now=1.36) and hand(d, frame(3), now=1.36) == b"a"
    # lock-step does not pace
    d2 = dispatcher(b"a", b"b")
    hand(d2, frame(1), now=0.0)
    d2.claim(b"a", 1, 7, now=1.0)
    d2.ready(b"a", "A", now=1.0)
    hand(d2, frame(2), now=1.0)
    assert hand(d2, frame(3), now=1.01, pace=False) == b"a"


def test_one_worker_is_never_paced():
    d = dispatcher(b"a")
    hand(d, frame(1), now=0.0)
    d.claim(b"a", 1, 7, now=1.0)
    d.ready(b"a", "A", now=1.0)
    assert hand(d, frame(2), now=1.0) == b"a"


def test_heartbeats_go_to_idle_workers_once_a_second():
    d = dispatcher(b"a", b"b")
    assert sorted(d.heartbeats_due(now=5.0)) == [b"a", b"b"]
    assert d.heartbeats_due(now=5.0 + HEARTBEAT_S / 2) == []
    hand(d, frame(1), now=5.5)  # a is busy: no heartbeat for it
    assert d.heartbeats_due(now=5.0 + HEARTBEAT_S) == [b"b"]


def test_no_heartbeat_to_a_worker_that_just_answered():
    """Its READY answering the heartbeat would cross the next hand-out: a second frame for it."""
    d = dispatcher(b"a")
    hand(d, frame(1), now=0.0)
    d.claim(b"a", 1, 7, now=1.0)
    d.ready(b"a", "A", now=1.0)  # its mask: idle again, heard from just now
    assert d.heartbeats_due(now=1.01) == []
    assert d.heartbeats_due(now=1.0 + HEARTBEAT_S) == [b"a"]  # idle and quiet for a second
    d.ready(b"a", "A", now=2.05)  # it answered
    assert d.heartbeats_due(now=2.5) == []
    assert d.heartbeats_due(now=2.05 + HEARTBEAT_S) == [b"a"]

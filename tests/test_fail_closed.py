"""Privacy fails closed, with real processes: no mask yet, a stale mask, a worker gone silent.

Stages are started one by one so the test can freeze the worker (SIGSTOP: a hung worker) and thaw
it again. The compositor's stats file (rewritten 4 times a second) and its saved alphas tell what
was shown: an all-zero alpha means the whole picture was hidden.
"""

import os
import signal

import cv2

from tests.conftest import endpoints, needs_shared, read_json, start_core, start_worker, wait_for

pytestmark = needs_shared


def start_pipeline(procs, port_base, tmp_path, *compositor_args, worker=True):
    start_core(procs, port_base, tmp_path, *compositor_args)
    return start_worker(procs, endpoints(port_base)[1]) if worker else None


def counts(tmp_path):
    """(frames composited, of them hidden, masks applied, compositor uptime in s)."""
    s = read_json(tmp_path / "comp.json")
    return (
        s.get("frames_composited", 0),
        s.get("fail_closed_frames", 0),
        s.get("masks_applied", 0),
        s.get("uptime_s", 0.0),
    )


def test_no_worker_means_every_frame_is_hidden(procs, port_base, tmp_path):
    alpha = tmp_path / "alpha"
    start_pipeline(procs, port_base, tmp_path, "--save-alpha", alpha, worker=False)
    composited, hidden, _, _ = wait_for(
        lambda: (c := counts(tmp_path))[0] >= 40 and c, 30, "40 composited frames"
    )
    assert hidden == composited  # nothing private leaks before a first mask exists
    assert set(read_json(tmp_path / "comp.json")["fail_closed_by_reason"]) == {"waiting"}
    pngs = sorted(alpha.glob("*.png"))
    assert pngs
    for p in pngs[:10]:
        assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED).max() == 0


def rate(a, b, i):
    """Per second of compositor uptime, between two stats snapshots, of column i of counts."""
    return (b[i] - a[i]) / (b[3] - a[3])


def shown_run(tmp_path, frames: int, timeout: float, what: str):
    """Wait for ``frames`` frames in a row (as the stats file tells) with at most 3 hidden.

    The run may start late: on two loaded cores a mask is now and then older than the limit for
    a moment (CI saw 4 of 30 frames hidden right after masks resumed), which is the fail-closed
    rule working, not the picture failing to return. A picture that never returns times out.
    """
    base = [counts(tmp_path)]

    def ok():
        c = counts(tmp_path)
        if c[0] < base[0][0] + frames:
            return None
        if c[1] - base[0][1] <= 3:
            return c
        base[0] = c  # too many hidden in this run: look at the next one
        return None

    return wait_for(ok, timeout, what)


def test_silent_worker_hides_the_room_and_display_keeps_going(procs, port_base, tmp_path):
    # 1 s: the selfie model's own limit (launch.py's); on two busy shared cores a selfie mask is
    # now and then 0.5-0.9 s old while the worker runs (measured: p95 0.6-0.9 s at load 11)
    worker = start_pipeline(procs, port_base, tmp_path, "--max-mask-age", "1.0")
    c0 = wait_for(lambda: (c := counts(tmp_path))[2] >= 10 and c, 40, "10 masks applied")
    c1 = shown_run(tmp_path, 25, 20, "25 frames shown in a row with masks fresh")
    running = rate(c0, c1, 0)  # the picture's rate with the worker alive, on this host now

    os.kill(worker.pid, signal.SIGSTOP)  # the worker hangs: no more masks
    # the last mask gets older than 1 s: frames are hidden from then on
    fresh = c1
    c1 = wait_for(lambda: (c := counts(tmp_path))[1] >= fresh[1] + 10 and c, 20, "frames hidden")
    c2 = wait_for(lambda: (c := counts(tmp_path))[0] >= c1[0] + 25 and c, 20, "25 frames more")
    assert c2[2] - c1[2] <= 2  # no new masks while frozen
    # the picture kept flowing at the rate it had with the worker alive (a 25 fps clip) ...
    # compared with that rate, not with 25 fps, which a host under steal does not give anyone
    # (CI measured 7.1 fps here once, an earlier stop 13.5-14.8); a compositor that waited on
    # the frozen worker would fall far below the rate it had.
    assert rate(c1, c2, 0) >= 0.6 * running, (rate(c1, c2, 0), running)
    assert c2[1] - c1[1] >= c2[0] - c1[0] - 2  # ... with the room hidden: last mask > 1 s old
    assert "stale" in read_json(tmp_path / "comp.json")["fail_closed_by_reason"]

    os.kill(worker.pid, signal.SIGCONT)  # back to life: masks and the normal picture return
    wait_for(lambda: counts(tmp_path)[2] > c2[2] + 10, 20, "masks to resume")
    shown_run(tmp_path, 25, 20, "25 frames shown in a row again")

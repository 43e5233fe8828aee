"""--mask-interval in the real pipeline: the compositor's bookkeeping stays consistent with a
resting worker (no timeouts, no rejected masks), and the worker keeps to its rate."""

from tests.conftest import launch_selfie, needs_shared, read_json

pytestmark = needs_shared


def test_mask_interval_with_the_real_compositor(tmp_path, port_base):
    interval = 0.5
    r, stats = launch_selfie(tmp_path, port_base, "--mask-interval", interval, frames=80)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    s = read_json(stats)
    worker, comp = s["stages"]["inference"], s["stages"]["compositor"]
    sent = worker["masks_sent"]
    # at most one mask per interval over the worker's life (+1: the first one needs no rest)
    assert 3 <= sent <= worker["uptime_s"] / interval + 1, (sent, worker["uptime_s"])
    assert worker.get("frames_declined", 0) >= 1  # handed over on a mask, during the rest
    assert worker.get("reconnects", 0) == 0
    assert comp["worker_timeouts"] == 0
    assert comp["masks_rejected_by_reason"] == {}
    assert comp["masks_by_worker"].get("inference", 0) >= 3

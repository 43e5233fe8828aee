"""--mask-interval's timing rule (inference.pacing.MaskPacer) on an injected clock: no sleeps."""

from inference.pacing import MaskPacer


def test_no_interval_never_rests():
    p = MaskPacer(0.0)
    p.mask_sent(started=10.0, now=10.05)
    assert not p.resting and not p.ready_due(10.05) and p.wait_s(10.05) == 0.1


def test_rest_is_counted_from_the_start_of_the_forward_pass():
    p = MaskPacer(interval=3.0, keepalive=5.0)
    p.mask_sent(started=100.0, now=102.0)  # a 2 s forward pass: 1 s of rest left
    assert p.resting
    assert not p.ready_due(102.0) and not p.ready_due(102.999)
    assert p.wait_s(102.0) == 0.1 and abs(p.wait_s(102.95) - 0.05) < 1e-9
    assert p.ready_due(103.0)
    p.said(103.0)  # the READY that ends the rest
    assert not p.resting and not p.ready_due(104.0)


def test_a_model_slower_than_the_interval_does_not_rest():
    p = MaskPacer(interval=1.0)
    p.mask_sent(started=0.0, now=2.0)
    assert not p.resting and not p.ready_due(2.0)


def test_at_most_one_mask_per_interval_over_many_masks():
    """Simulate a 10 ms model asking for work whenever allowed: masks start S apart, not faster."""
    p, now, starts = MaskPacer(interval=0.5, keepalive=5.0), 0.0, []
    while now < 10.0:
        starts.append(now)
        p.mask_sent(started=now, now=now + 0.01)
        now += 0.01
        while not p.ready_due(now):
            now += p.wait_s(now) or 0.001
        p.said(now)
        now += 0.002  # the compositor's answer: the newest frame
    gaps = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert min(gaps) >= 0.5 and max(gaps) < 0.51
    assert len(starts) == 20


def test_keepalive_during_a_long_rest_without_ending_it():
    p = MaskPacer(interval=12.0, keepalive=5.0)
    p.mask_sent(started=0.0, now=0.1)
    assert not p.ready_due(5.0) and p.ready_due(5.1)  # 5 s after the mask went out
    p.said(5.1)  # keep-alive READY: still resting
    assert p.resting and not p.ready_due(10.0) and p.ready_due(10.1)
    p.said(10.1)
    assert p.resting and abs(p.wait_s(11.95) - 0.05) < 1e-9
    assert p.ready_due(12.0)
    p.said(12.0)
    assert not p.resting


def test_answering_a_heartbeat_while_resting_does_not_end_the_rest():
    p = MaskPacer(interval=2.0)
    p.mask_sent(started=0.0, now=0.01)
    p.said(1.0)  # READY answering the compositor's heartbeat (it thinks the worker idle)
    assert p.resting and not p.ready_due(1.5) and p.ready_due(2.0)

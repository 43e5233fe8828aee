"""The applied mask and the hide-or-show verdict, and the privacy switch, without sockets
(milliseconds)."""

from common.protocol import MASK_ASPECT, MASK_TOO_LARGE, mask_problem
from compositor.control import PrivacySwitch
from compositor.maskslot import (
    MISMATCH,
    STALE,
    WAITING,
    MaskSlot,
)

HD = (360, 640)


def slot_with_mask(max_age=1.0, lockstep=False, stream=5, frame_id=10, ts=100.0, shape=HD):
    s = MaskSlot(max_age, lockstep)
    s.see_frame(stream)
    assert s.newer(stream, frame_id)
    s.accept(stream, frame_id, ts, shape)
    return s


def test_no_mask_yet_is_waiting():
    v = MaskSlot(1.0).verdict(5, 100.0, HD)
    assert (v.show, v.hidden, v.age_s) == (False, WAITING, None)


def test_fresh_mask_is_shown_with_its_age():
    v = slot_with_mask().verdict(5, 100.4, HD)
    assert v.show and v.hidden == "" and abs(v.age_s - 0.4) < 1e-9


def test_older_than_max_age_is_stale():
    s = slot_with_mask(max_age=1.0)
    assert s.verdict(5, 101.0, HD).show  # exactly the limit is still trusted
    v = s.verdict(5, 101.01, HD)
    assert (v.show, v.hidden) == (False, STALE) and v.age_s > 1.0


def test_lockstep_is_never_stale():
    v = slot_with_mask(max_age=1.0, lockstep=True).verdict(5, 1000.0, HD)
    assert v.show and v.hidden == ""


def test_another_stream_or_aspect_is_a_mismatch():
    s = slot_with_mask()
    v = s.verdict(6, 100.1, HD)
    assert (v.show, v.hidden, v.age_s) == (False, MISMATCH, None)
    v = s.verdict(5, 100.1, (480, 640))  # 4:3 frame, 16:9 mask
    assert (v.show, v.hidden) == (False, MISMATCH)
    assert s.verdict(5, 100.1, (720, 1280)).show  # same aspect, other size: fine
    assert s.verdict(5, 100.1, (361, 640)).show  # rounding of sizes


def test_newest_frame_id_wins_per_stream():
    s = slot_with_mask(frame_id=10)
    assert not s.newer(5, 9) and not s.newer(5, 10) and s.newer(5, 11)


def test_a_restarted_capture_new_stream_wins_but_a_late_old_one_does_not():
    s = slot_with_mask(stream=5, frame_id=10)
    s.see_frame(6)  # capture restarted: stream 6 is coming in now
    assert s.newer(6, 0)
    s.accept(6, 0, 200.0, HD)
    assert not s.newer(5, 11)  # a late mask of the old stream cannot replace it
    assert MaskSlot(1.0).newer(5, 0)  # nothing seen yet: any mask may be the first


def test_mask_image_must_have_the_frames_aspect_and_at_most_its_size():
    assert mask_problem((360, 640), (360, 640, 3)) == ""
    assert mask_problem((144, 256), (360, 640, 3)) == ""  # the selfie model's landscape output
    assert mask_problem((720, 1280), (360, 640, 3)) == MASK_TOO_LARGE
    assert mask_problem((360, 641), (360, 640, 3)) == MASK_TOO_LARGE
    assert mask_problem((256, 256), (360, 640, 3)) == MASK_ASPECT
    assert mask_problem((1, 640), (360, 640, 3)) == MASK_ASPECT


def test_privacy_commands_and_only_changes_are_logged_rate_limited():
    p = PrivacySwitch(True, log_interval=1.0)
    assert not p.apply("on") and p.report(0.0) is None  # no change, no line
    assert p.apply("off") and p.report(0.0) == "privacy off"  # first change: at once
    assert p.apply("toggle") and p.on
    assert p.report(0.5) is None  # rate-limited ...
    assert p.report(1.0) == "privacy on"  # ... then reported
    lines = []
    for i in range(10_001):
        p.apply("toggle")
        if line := p.report(2.0 + i * 1e-5):  # 10,001 toggles in 0.1 s
            lines.append(line)
    assert lines == ["privacy off"]  # the first; the rest is owed
    assert p.report(3.0) == "privacy off (10000 changes)" and not p.on
    assert p.report(9.0) is None


def feed(s, masks, stream=5):
    """Masks applied as a busy worker delivers them: each (mask frame ts, arrival ts)."""
    for i, (ts, at) in enumerate(masks):
        s.see_frame(stream, at)
        s.accept(stream, 100 + i, ts, HD)


def test_a_fast_model_keeps_the_max_age_as_the_limit():
    s = MaskSlot(1.0)
    feed(s, [(t, t + 0.08) for t in (100.0, 100.08, 100.16, 100.24)])  # selfie-like cadence
    assert s.limit() == 1.0
    assert (s.verdict(5, 101.25, HD).hidden, s.verdict(5, 101.23, HD).hidden) == (STALE, "")


def test_a_model_slower_than_the_max_age_allows_is_not_hidden_while_it_works():
    """Mask R-CNN stand-in on a slow machine: 4.6 s per mask, so masks are 4.6-9.2 s old."""
    s = MaskSlot(6.0)
    feed(s, [(100.0 + 4.6 * i, 104.6 + 4.6 * i) for i in range(5)])
    last = 100.0 + 4.6 * 4
    assert s.verdict(5, last + 9.1, HD).show  # just before the next mask: shown
    assert abs(s.limit() - 1.5 * 9.2) < 1e-6
    v = s.verdict(5, last + 14.0, HD)  # the worker stalled: hidden
    assert (v.show, v.hidden) == (False, STALE)


def test_the_first_slow_mask_is_not_hidden_before_the_second_can_come():
    s = MaskSlot(6.0)
    feed(s, [(100.0, 104.6)])
    assert s.verdict(5, 109.0, HD).show and not s.verdict(5, 114.0, HD).show


def test_one_late_mask_does_not_loosen_the_limit():
    s = MaskSlot(1.0)
    times = [100.0 + 0.1 * i for i in range(8)]
    feed(s, [(t, t + 0.1) for t in times] + [(101.0, 121.0), (121.0, 121.1)])  # a 20 s stall
    assert s.limit() == 1.0


def test_however_slow_the_worker_the_limit_is_capped():
    s = MaskSlot(1.0)
    feed(s, [(100.0 + 500 * i, 600.0 + 500 * i) for i in range(4)])
    assert s.limit() == 1.5 * 30.0


def test_a_new_stream_starts_its_own_cadence():
    s = MaskSlot(1.0)
    feed(s, [(100.0 + 4 * i, 104.0 + 4 * i) for i in range(4)])
    assert s.limit() > 10
    s.see_frame(6, 500.0)
    s.accept(6, 1, 499.95, HD)
    assert s.limit() == 1.0

"""The compositor's rules on typed messages, without sockets or processes (milliseconds): which
masks are accepted (issue 10), why a picture is hidden, the motion wiring, the stats names."""

import logging
from dataclasses import dataclass

import numpy as np

from common import protocol
from common.stats import Stats
from compositor import compose
from compositor.core import MAX_WORKER_NAMES, OTHER_WORKERS, Core
from compositor.dispatch import Dispatcher
from compositor.maskslot import MaskSlot
from compositor.picture import Picture
from compositor.workers import WorkerPool

H, W = 90, 160
LOG = logging.getLogger("test-compositor")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_core(max_age=1.0, lockstep=False, motion=None):
    clock = Clock()
    stats = Stats("compositor", LOG)
    look = compose.new_state(compose.ComposeSettings())
    picture = Picture(look, MaskSlot(max_age, lockstep), stats, motion=motion)
    dispatcher = Dispatcher(WorkerPool(timeout=10.0), max_in_flight=4)
    return Core(dispatcher, picture, stats, LOG, clock=clock), clock


def frame(i, ts=None, stream=7, shape=(H, W)):
    rng = np.random.default_rng(i)
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    image.flags.writeable = False  # as received from zmq
    return protocol.Frame(
        frame_id=i, ts=100.0 + i if ts is None else ts, stream=stream, image=image
    )


def mask(i, stream=7, shape=(H, W), worker="A"):
    m = np.zeros(shape, np.uint8)
    m[:, : shape[1] // 2] = 255
    return protocol.Mask(frame_id=i, stream=stream, worker=worker, infer_ms=12.0, image=m)


def hand(core, f, worker=b"a"):
    core.on_ready(worker, protocol.Ready(worker=worker.decode().upper()))
    core.handed(worker, f, f.image.nbytes)  # (which idle worker gets it: test_dispatch.py)


def deliver(core, worker, m):
    """What the real-time loop does with a mask message."""
    rec = core.on_mask(worker, m, m.image.nbytes)
    return rec is not None and core.apply(rec, m, worker)


def test_only_the_handed_out_frames_mask_from_its_worker_is_applied():
    core, _ = make_core()
    hand(core, frame(1))
    assert deliver(core, b"a", mask(1))
    applied = core.picture.slot.applied
    alpha = core.picture.look.mask.alpha.copy()
    hand(core, frame(2))
    core.on_ready(b"b", protocol.Ready(worker="B"))
    forged = [
        (b"a", mask(2**63 - 1)),  # the id a worker would forge to win "newest" forever
        (b"a", mask(3)),  # never handed out
        (b"b", mask(2, worker="A")),  # a's frame, from b, even under a's name
        (b"a", mask(2, stream=8)),
        (b"a", mask(2, shape=(2 * H, 2 * W))),  # bigger than the frame
        (b"a", mask(2, shape=(H, H))),  # another aspect
    ]
    for worker, m in forged:
        assert not deliver(core, worker, m)
    assert core.picture.slot.applied == applied
    assert np.array_equal(core.picture.look.mask.alpha, alpha)
    assert core.stats.counts["masks_rejected"] == len(forged)
    assert core.rejected == {
        "not_handed_out": 2,
        "wrong_worker": 1,
        "wrong_stream": 1,
        "mask_too_large": 1,
        "mask_aspect": 1,
    }
    assert core.masks_by_worker == {"A": 1}
    # the genuine mask (at a smaller size of the same aspect) still gets through
    hand(core, frame(4))
    assert deliver(core, b"a", mask(4, shape=(H // 2, W // 2)))
    assert core.picture.slot.applied.frame_id == 4


def test_a_worker_renaming_itself_every_mask_cannot_grow_the_per_worker_table():
    core, _ = make_core()
    n = MAX_WORKER_NAMES + 40
    for i in range(1, n + 1):
        hand(core, frame(i))
        assert deliver(core, b"a", mask(i, worker=f"w{i}"))
    assert len(core.masks_by_worker) == MAX_WORKER_NAMES + 1
    assert core.masks_by_worker[OTHER_WORKERS] == n - MAX_WORKER_NAMES
    assert core.masks_by_worker["w1"] == 1 and sum(core.masks_by_worker.values()) == n
    assert core.live_stats()["masks_by_worker"] == core.masks_by_worker


def test_older_mask_is_counted_stale_not_applied():
    core, _ = make_core()
    hand(core, frame(1), b"a")
    hand(core, frame(2), b"b")
    assert deliver(core, b"b", mask(2, worker="B"))
    assert not deliver(core, b"a", mask(1))  # genuine, but older than the applied one
    assert core.stats.counts["masks_stale"] == 1 and core.stats.counts["masks_rejected"] == 0
    assert core.picture.slot.applied.frame_id == 2


def test_mask_age_is_measured_from_the_compositors_record_of_the_frame():
    core, _ = make_core(max_age=1.0)
    hand(core, frame(1, ts=50.0))
    deliver(core, b"a", mask(1))
    out, _ = core.picture.composite(frame(9, ts=50.25), privacy=True)
    assert out.mask_age_ms == 250.0 and out.hidden == "" and not out.fail_closed
    assert list(core.stats.series["mask_age_ms"]) == [250.0]


def test_output_says_why_the_picture_is_hidden():
    core, _ = make_core(max_age=1.0)
    out, alpha = core.picture.composite(frame(1), privacy=True)
    assert (out.hidden, out.fail_closed, out.mask_age_ms) == ("waiting", True, None)
    assert alpha.max() == 0
    hand(core, frame(1))
    deliver(core, b"a", mask(1))
    out, _ = core.picture.composite(frame(3, ts=101.0 + 1.5), privacy=True)
    assert (out.hidden, out.fail_closed) == ("stale", True)
    out, _ = core.picture.composite(frame(4, shape=(120, 160)), privacy=True)
    assert (out.hidden, out.fail_closed) == ("mismatch", True)
    out, _ = core.picture.composite(frame(5, stream=9), privacy=True)
    assert (out.hidden, out.fail_closed) == ("mismatch", True)
    out, _ = core.picture.composite(frame(6, stream=9), privacy=False)
    assert (out.hidden, out.fail_closed, out.privacy) == ("", False, False)
    protocol.decode([bytes(p) for p in protocol.encode(out)])  # the display will accept it


def test_lockstep_masks_are_never_stale():
    core, _ = make_core(max_age=0.01, lockstep=True)
    hand(core, frame(1, ts=10.0))
    deliver(core, b"a", mask(1))
    out, _ = core.picture.composite(frame(1, ts=10.0), privacy=True)
    assert out.hidden == "" and not out.fail_closed


@dataclass
class Tracked:
    alpha: np.ndarray
    hidden_share: float
    ms: float
    picture: np.ndarray | None = None


class FakeMotion:
    """Records the calls the compositor makes; track() returns an all-person alpha."""

    def __init__(self) -> None:
        self.calls = []

    def observe(self, frame_id, image):
        self.calls.append(("observe", frame_id))

    def new_mask(self, alpha, frame_id, mask_frame):
        self.calls.append(("new_mask", frame_id, alpha.shape, mask_frame))
        self.alpha_shape = alpha.shape

    def track(self, frame_id, image):
        self.calls.append(("track", frame_id))
        self.picture = np.zeros((*self.alpha_shape, 3), np.uint8)
        return Tracked(np.ones(self.alpha_shape, np.float32), 0.25, 1.5, self.picture)

    def reset(self):
        self.calls.append(("reset",))


def test_motion_wiring(monkeypatch):
    motion = FakeMotion()
    core, _ = make_core(motion=motion)
    guides = []  # what render was given as the frame on the grid (the tracked picture)
    real_render = compose.render

    def render(*args, **kw):
        guides.append(kw.get("guide"))
        return real_render(*args, **kw)

    monkeypatch.setattr(compose, "render", render)
    f1 = frame(1)
    out, _ = core.picture.composite(f1, privacy=True)  # no mask yet: observed, not tracked
    hand(core, f1)
    deliver(core, b"a", mask(1))
    _, frame_id, shape, mask_frame = motion.calls[-1]
    assert (frame_id, shape) == (1, core.picture.look.mask.alpha.shape)
    assert mask_frame is f1.image  # the in-flight frame's own picture
    out, alpha = core.picture.composite(frame(2), privacy=True)
    assert motion.calls[-2:] == [("observe", 2), ("track", 2)]
    assert guides[-1] is motion.picture
    assert alpha.min() >= 250  # the tracked alpha (all person) was applied, not the stored one
    assert core.picture.look.mask.alpha.min() == 0  # ... and the stored one is unchanged
    assert list(core.stats.series["motion_ms"]) == [1.5]
    assert list(core.stats.series["motion_hidden_share"]) == [0.25]
    core.picture.composite(frame(3), privacy=False)  # privacy off: observed, not tracked
    assert motion.calls[-1] == ("observe", 3) and guides[-1] is None
    still = protocol.Frame(frame_id=4, ts=104.0, stream=7, still=True, image=frame(4).image)
    core.picture.composite(still, privacy=True)  # stills: no motion at all
    assert motion.calls[-1] == ("observe", 3)
    core.picture.composite(frame(5, stream=8), privacy=True)  # a restarted capture
    assert ("reset",) in motion.calls


def test_stats_keep_their_names():
    core, _ = make_core()
    snap = core.stats.snapshot()
    for name in (
        "frames_composited",
        "frames_dropped",
        "fail_closed_frames",
        "masks_received",
        "masks_applied",
        "masks_stale",
        "masks_rejected",
        "peers_refused",
        "inference_fps",
        "masks_received_fps",
        "masks_by_worker",
        "masks_rejected_by_reason",
        "worker_timeouts",
        "bad_messages",
        "bytes_per_frame_to_workers",
        "bytes_per_mask",
        "privacy",
    ):
        assert name in snap, name

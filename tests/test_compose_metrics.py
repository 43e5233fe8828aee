"""bench/metrics.py on synthetic shapes: the numbers the quality tables rest on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.bench_motion import flicker, lead_frames, per_frame, write_clip
from bench.metrics import agreement, boundary, boundary_f, checks, fragments, iou, summary


def square(x0: int, size: int = 40, shape: tuple[int, int] = (100, 100)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[30 : 30 + size, x0 : x0 + size] = 255
    return m


def test_iou_of_shifted_squares_is_the_overlap_ratio():
    a, b = square(20), square(30)  # 40x40 each, overlap 30x40
    assert iou(a, a) == 1.0
    assert abs(iou(a, b) - (30 * 40) / (2 * 40 * 40 - 30 * 40)) < 1e-9
    assert iou(a, np.zeros_like(a)) == 0.0


def test_empty_prediction_and_empty_gt_score_perfect():
    z = np.zeros((50, 50), np.uint8)
    assert iou(z, z) == 1.0 and boundary_f(z, z) == 1.0
    assert boundary_f(z, square(5, 20, (50, 50))) == 0.0


def test_agreement_splits_the_disagreement_into_room_shown_and_person_blurred():
    applied, ref = square(20) > 0, square(30) > 0  # applied lies 10 px left of the reference
    got_iou, room, blurred = agreement(applied, ref)
    assert abs(got_iou - iou(applied, ref)) < 1e-12
    assert room == blurred == 10 * 40 / applied.size  # the strip each has alone
    wider = square(20, 50) > 0  # covers the reference and more: shows room, blurs nothing
    _, room, blurred = agreement(wider, ref)
    assert room > 0 and blurred == 0
    z = np.zeros((100, 100), bool)
    assert agreement(z, z) == (1.0, 0.0, 0.0)


def test_alpha_is_thresholded_at_128():
    gt = square(20)
    soft = (gt > 0).astype(np.uint8) * 128
    assert iou(soft, gt) == 1.0
    assert iou(soft - 1, gt) == 0.0


def test_boundary_f_tolerates_2px_but_not_4px():
    gt = square(30)
    assert boundary_f(square(30), gt) == 1.0
    assert boundary_f(square(32), gt) == 1.0  # every contour pixel within 2 px
    shifted4 = boundary_f(square(34), gt)
    assert shifted4 < 0.7  # left/right edges now 4 px off: only top/bottom runs still match
    assert boundary_f(square(32), gt, tolerance=1) < 1.0


def test_boundary_is_one_pixel_thick_and_ignores_the_frame_edge():
    m = np.zeros((60, 60), bool)
    m[:, :30] = True  # touches the left, top and bottom frame border
    b = boundary(m)
    assert b.sum() == 60 and b[:, 29].all()  # only the inner edge at x = 29


def test_boundary_f_rewards_a_better_edge_where_iou_barely_moves():
    gt = np.zeros((200, 200), np.uint8)
    cv2.circle(gt, (100, 100), 70, 255, -1)
    rough = gt.copy()
    rng = np.random.default_rng(0)
    for _ in range(60):  # dents and bumps of 3-4 px along the contour
        ang = rng.uniform(0, 2 * np.pi)
        c = (int(100 + 70 * np.cos(ang)), int(100 + 70 * np.sin(ang)))
        cv2.circle(rough, c, 4, int(rng.integers(0, 2)) * 255, -1)
    i, f = iou(rough, gt), boundary_f(rough, gt)
    assert i > 0.9
    assert 1 - f > 2 * (1 - i), (i, f)  # the contour metric sees the edge damage far more


def test_fragments_count_small_islands_and_holes_not_the_body():
    m = np.zeros((200, 200), np.uint8)
    m[40:160, 60:140] = 255  # the body: one large region, the background another
    assert fragments(m) == 0
    m[5:8, 5:8] = 255  # two specks of "person" in the room ...
    m[190:192, 20:23] = 255
    m[100:103, 100:103] = 0  # ... and a hole of room in the body
    assert fragments(m) == 3
    assert fragments(m, max_share=0.0001) == 0  # each is 6-9 px: above 4 px


def test_motion_bench_checks_name_each_missed_acceptance_check():
    off = {"room_mean": 0.9, "iou": 0.5, "blurred": 1.0}
    assert checks(off, {"room_mean": 0.29, "iou": 0.5, "blurred": 1.0}) == "pass"
    worse = {"room_mean": 0.31, "iou": 0.49, "blurred": 1.01}
    assert checks(off, worse) == "miss: room IoU blurred"
    assert checks(off, {"room_mean": 0.1, "iou": 0.6, "blurred": 1.2}) == "miss: blurred"


def test_motion_bench_flicker_scores_each_frame_against_one_k_frames_before(tmp_path):
    """Frames 0..3 of a square moving 10 px a frame: lag 1 is one 10 px step everywhere, lag 2
    two; a missing file is skipped, not compared across the gap."""
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i:06d}.png"), square(10 + 10 * i))
    got = flicker(tmp_path, (1, 2))
    one, two = got[1], got[2]
    assert one["frames"] == 3 and two["frames"] == 2
    assert abs(one["room_mean"] - 100 * 10 * 40 / 1e4) < 1e-9
    assert abs(two["room_mean"] - 100 * 20 * 40 / 1e4) < 1e-9
    assert two["iou"] < one["iou"] < 1.0
    (tmp_path / "000002.png").unlink()
    assert flicker(tmp_path, (1,))[1]["frames"] == 1  # only 0 -> 1; 1 -> 3 is not a lag of 1


def test_motion_bench_pools_every_frame_of_every_run():
    """Pooled means weigh frames, not runs: a run of 3 frames counts 3x one of 1 frame."""
    a = per_frame_rows([(1.0, 0.0, 0.0)] * 3)
    b = per_frame_rows([(0.0, 0.04, 0.0)])
    pooled = summary(np.concatenate([a, b]))
    assert pooled["frames"] == 4 and abs(pooled["room_mean"] - 1.0) < 1e-9
    assert pooled["iou"] == 0.75 and summary(per_frame_rows([]))["frames"] == 0


def per_frame_rows(rows: list[tuple[float, float, float]]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 3)


def test_motion_bench_per_frame_skips_frames_without_a_reference(tmp_path):
    live, fresh = tmp_path / "live", tmp_path / "fresh"
    live.mkdir(), fresh.mkdir()
    for i in range(3):
        cv2.imwrite(str(live / f"{i:06d}.png"), square(20))
    cv2.imwrite(str(fresh / "000001.png"), square(30))
    got = per_frame(live, fresh)
    assert got.shape == (1, 3) and abs(got[0, 1] - 10 * 40 / 1e4) < 1e-12


def test_motion_bench_scores_a_clip_with_a_lead_against_the_fresh_frame_it_shows(tmp_path):
    """A repeat that played ``lead`` still frames first is scored frame for frame against the
    fresh run of the clip without them: its frame i shows the clip's frame max(0, i - lead)."""
    live, fresh = tmp_path / "live", tmp_path / "fresh"
    live.mkdir(), fresh.mkdir()
    for i in range(4):  # the fresh run: the square moves 10 px a frame
        cv2.imwrite(str(fresh / f"{i:06d}.png"), square(10 * i))
    for i, x in enumerate([0, 0, 0, 10, 20, 30]):  # the live run: two still frames, then the clip
        cv2.imwrite(str(live / f"{i:06d}.png"), square(x))
    got = per_frame(live, fresh, lead=2)
    assert got.shape == (6, 3) and (got[:, 0] == 1.0).all()
    assert per_frame(live, fresh).shape == (4, 3)  # without the lead: frames 0-3, mismatched
    assert (per_frame(live, fresh)[1:, 0] < 1.0).all()
    assert per_frame(live, fresh, start=3, lead=2).shape == (3, 3)


def test_motion_bench_leads_cover_one_mask_interval_evenly_and_play_a_still_first(tmp_path):
    assert [lead_frames(r, 4, 2.0, 25.0) for r in range(4)] == [0, 12, 25, 38]
    assert lead_frames(0, 1, 2.0, 25.0) == 0  # a single run is the clip as it is
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (36, 64, 3), np.uint8) for _ in range(3)]
    cap = cv2.VideoCapture(str(write_clip(frames, 25.0, tmp_path / "c.mkv", 64, lead=2)))
    back = []
    while (got := cap.read())[0]:
        back.append(got[1])
    cap.release()
    want = [frames[0]] * 2 + frames  # lossless: every pixel of noise comes back as it was
    assert len(back) == 5 and all((b == w).all() for b, w in zip(back, want, strict=True))
    small = cv2.VideoCapture(str(write_clip(frames, 25.0, tmp_path / "s.mkv", 32)))
    assert small.read()[1].shape == (18, 32, 3)  # at capture's --width, as capture sends it
    small.release()


def test_motion_lab_truth_reads_the_davis_annotation_at_the_frames_size():
    from bench import motion_lab

    by_name = {c.name: c for c in motion_lab.clips()}
    frames = [np.zeros((360, 640, 3), np.uint8)] * 3
    truth = motion_lab.ground_truth(by_name["hike"], frames)
    assert truth is not None and len(truth) == 3
    assert truth[0].shape == (360, 640) and truth[0].dtype == bool
    assert 0.01 < truth[0].mean() < 0.2  # the hiker, not the whole frame or nothing
    assert motion_lab.ground_truth(by_name["sitting"], frames) is None  # a video: no annotation


def test_motion_lab_reads_clips_at_the_size_capture_gives_them():
    """The lab stands in for live runs, so it must see what capture sends: narrow clips as they
    are (it once enlarged akiyo and carphone to 640 px), wide ones shrunk to --width."""
    from bench import motion_lab

    by_name = {c.name: c for c in motion_lab.clips()}
    frames, fps = motion_lab.read_frames(by_name["carphone"])
    assert frames[0].shape[:2] == (144, 176) and len(frames) == 120 and fps > 29
    frames, _ = motion_lab.read_frames(by_name["hike"])
    assert frames[0].shape[:2] == (360, 640)


def test_motion_lab_speed_plays_every_kth_frame_and_caches_apart(tmp_path, monkeypatch):
    """--speed 2 must be the clip twice as fast (frames 0, 2, 4, ... at the same rate), not the
    first half of it, with the annotation of those frames, and its masks must not be taken from
    the speed-1 cache."""
    from bench import motion_lab

    monkeypatch.setattr(motion_lab, "CACHE", tmp_path)

    one = {c.name: c for c in motion_lab.clips()}
    two = {c.name: c for c in motion_lab.clips(speed=2)}
    read = {}
    for name in ("carphone", "hike"):  # a video file and a folder of frames
        frames, fps = motion_lab.read_frames(one[name])
        fast, fast_fps = motion_lab.read_frames(two[name])
        assert fast_fps == fps and len(fast) == (len(frames) + 1) // 2
        assert all(np.array_equal(a, b) for a, b in zip(fast, frames[::2], strict=True))
        read[name] = frames, fast
    hike, fast_hike = read["hike"]
    truth = motion_lab.ground_truth(one["hike"], hike)
    fast_truth = motion_lab.ground_truth(two["hike"], fast_hike)
    assert fast_truth is not None and len(fast_truth) == len(fast_hike)
    assert all(np.array_equal(a, b) for a, b in zip(fast_truth, truth[::2], strict=True))
    slow, fast = read["carphone"]
    a = motion_lab.fresh_masks(one["carphone"], slow[:3])  # the real selfie model
    b = motion_lab.fresh_masks(two["carphone"], fast[:3])  # same count: frames 0, 2, 4
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.array_equal(a, b)


def test_motion_lab_schedule_starts_at_its_phase_and_delivers_late():
    from bench.motion_lab import schedule

    assert schedule(130, 50, 2, offset=30) == {32: 30, 82: 80}  # 130 + 2 is past the clip
    assert schedule(100, 50, 50) == {50: 0}


def test_motion_lab_refined_variants_parse_settings_and_refuse_the_rest():
    """--refined --variants scores motion settings against one motion-off arm; a name that is
    not a setting (the plain lab's experiments, a typo, a bad value) is refused in one line."""
    from bench import motion_lab

    v = motion_lab._refined_variants(["residual_threshold=16", "no-hide", "colour_llr=none"])
    assert list(v) == ["motion", "residual_threshold=16", "no-hide", "colour_llr=none"]
    assert v["residual_threshold=16"].residual_threshold == 16.0
    assert v["no-hide"].hide_unexplained is False and v["colour_llr=none"].colour_llr is None
    assert v["motion"] == motion_lab.MotionSettings()
    for bad in ("rigid", "fresh-1", "colour", "all", "residual_threshold=x", "nosuch=1", "x"):
        assert motion_lab._refined_variants([bad]) is None, bad
    with pytest.raises(SystemExit) as e:
        motion_lab.main(["--refined", "--variants", "rigid"])
    assert e.value.code == 2


def test_motion_lab_refined_run_takes_the_motion_settings_it_is_given():
    """None is the motion-off arm: a mask 10 frames old lags a moving square and shows the room
    it left; the compensator with the settings given carries it along."""
    from bench import motion_lab

    rng = np.random.default_rng(3)
    room = rng.integers(0, 255, (180, 320, 3), np.uint8)
    frames, masks = [], []
    for i in range(30):
        f, m = room.copy(), np.zeros((180, 320), np.uint8)
        x = 40 + 4 * i
        f[60:120, x : x + 60] = (40, 160, 90)
        m[60:120, x : x + 60] = 255
        frames.append(f)
        masks.append(m)
    ref = [m >= 128 for m in masks]
    off = motion_lab._refined_run(frames, masks, ref, 10, None, 0)
    on = motion_lab._refined_run(frames, masks, ref, 10, motion_lab.MotionSettings(), 0)
    assert len(off) == len(on) == 30
    assert off[:, 1].mean() > 0.01 and on[:, 1].mean() < off[:, 1].mean() / 2
    assert on[:, 0].mean() > off[:, 0].mean()  # IoU

"""The launcher's parts without running a pipeline: flags, checks, keys, links, plan, stats."""

import argparse
import json
import stat
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import launch
from capture.config import CaptureConfig
from common.config import add_arguments, from_namespace
from common.endpoints import IPC_PATH_MAX, private, private_folder
from common.errors import FatalError
from compositor.config import CompositorConfig
from display.config import DisplayConfig
from inference.config import WorkerConfig, model_names
from tests.conftest import REPO, env
from tests.conftest import launch as run_launch

CONFIGS = {
    "capture": CaptureConfig,
    "compositor": CompositorConfig,
    "display": DisplayConfig,
    "inference": WorkerConfig,
}


def plan(tmp_path, *args):
    a = launch.parse_args(list(args))
    launch.check(a)
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)  # main() plans inside the private folder it has just made
    return {s.name: s for s in launch.plan(a, launch.links(a, folder), folder)}


def config_of(stage, module=None):
    """What the stage will run with: its command line parsed back the way the stage parses it."""
    assert stage.command[:2] == [sys.executable, "-m"]
    cls = CONFIGS[module or stage.command[2]]
    p = argparse.ArgumentParser()
    add_arguments(p, cls)
    return from_namespace(cls, p.parse_args(stage.command[3:]))


def test_importing_the_launcher_loads_no_opencv_and_no_model():
    code = "import launch, sys; assert 'cv2' not in sys.modules, 'cv2'; print('ok')"
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_help_shows_defaults_and_model_choices():
    r = run_launch("--help", timeout=60)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "--model {" + ",".join(model_names()) + "}" in text
    for shown in ("(default: maskrcnn)", "(default: 640)", "(default: on)", "(default: 10)"):
        assert shown in text, shown
    assert "default per model: maskrcnn 6 s, selfie 1 s" in text


def test_every_stage_setting_is_a_flag_or_computed_by_the_launcher():
    dests = {a.dest for a in launch.build_parser()._actions}
    for cls in CONFIGS.values():
        for f in fields(cls):
            if f.metadata.get("cli"):
                assert f.name in dests or f.name in launch.COMPUTED[cls], (cls.__name__, f.name)
        assert launch.COMPUTED[cls] <= {f.name for f in fields(cls)}


def test_flags_reach_each_stage_by_keyword(tmp_path):
    bg = tmp_path / "beach.jpg"
    bg.write_bytes(b"x")
    stages = plan(
        tmp_path,
        *("--source", "clip.mp4", "--width", "320", "--loop", "--lockstep", "--model", "selfie"),
        *("--threads", "1", "--nice", "5", "--privacy", "off", "--blur", "2.5", "--no-refine"),
        *("--background", str(bg), "--headless", "--max-frames", "30", "--worker-timeout", "3"),
    )
    assert list(stages) == ["capture", "compositor", "inference", "display"]
    cap, comp, disp = (config_of(stages[n]) for n in ("capture", "compositor", "display"))
    work = config_of(stages["inference"])
    assert (cap.source, cap.width, cap.loop, cap.lockstep, cap.max_frames) == (
        "clip.mp4",
        320,
        True,
        True,
        0,  # the display counts frames; capture must not stop early
    )
    assert (comp.privacy, comp.blur, comp.refine, comp.background) == (False, 2.5, False, bg)
    assert (comp.lockstep, comp.worker_timeout, comp.max_mask_age) == (True, 3.0, 1.0)
    assert (disp.headless, disp.max_frames) == (True, 30)
    assert (work.model, work.threads, work.nice, work.name) == ("selfie", 1, 5, "inference")
    for name, cfg in (("capture", cap), ("compositor", comp), ("display", disp)):
        assert cfg.stats_json == tmp_path / "run" / f"{name}.json"


def test_fail_closed_limit_follows_the_model_unless_given(tmp_path):
    def age(*args):
        return config_of(plan(tmp_path, *args)["compositor"]).max_mask_age

    assert age("--model", "selfie") == 1.0  # a fast model: a second without masks is a dead worker
    assert age("--model", "maskrcnn") == 6.0  # masks are normally seconds old
    assert age("--model", "selfie", "--max-mask-age", "2.5") == 2.5


def test_links_are_private_sockets_by_default(tmp_path):
    stages = plan(tmp_path)
    comp, disp = config_of(stages["compositor"]), config_of(stages["display"])
    run = tmp_path / "run"
    assert comp.frames == config_of(stages["capture"]).bind == f"ipc://{run}/f"
    assert comp.infer_bind == config_of(stages["inference"]).connect == f"ipc://{run}/i"
    assert comp.out_bind == disp.connect == f"ipc://{run}/o"
    assert comp.control_bind == disp.control == f"ipc://{run}/c"


def test_tcp_links_from_the_port_base(tmp_path):
    stages = plan(tmp_path, "--links", "tcp", "--port-base", "6000")
    comp = config_of(stages["compositor"])
    assert comp.frames == "tcp://127.0.0.1:6000" and comp.infer_bind == "tcp://127.0.0.1:6001"
    assert comp.out_bind == "tcp://127.0.0.1:6002" and comp.control_bind == "tcp://127.0.0.1:6003"


def test_remote_workers_link_stays_tcp_and_local_workers_use_loopback(tmp_path):
    keys = tmp_path / "keys"
    stages = plan(tmp_path, "--infer-bind", "tcp://0.0.0.0:5551", "--keys", str(keys))
    comp, work = config_of(stages["compositor"]), config_of(stages["inference"])
    assert comp.infer_bind == "tcp://0.0.0.0:5551" and comp.keys == keys
    assert work.connect == "tcp://127.0.0.1:5551" and work.keys == keys / "worker-local"
    assert comp.frames.startswith("ipc://") and comp.out_bind.startswith("ipc://")
    assert not keys.exists()  # plan is pure: keys are made by their own step


def test_worker_names_and_stage_rules(tmp_path):
    assert [n for n in plan(tmp_path, "--workers", "0")] == ["capture", "compositor", "display"]
    stages = plan(tmp_path, "--workers", "2")
    assert [config_of(stages[n], "inference").name for n in ("worker-1", "worker-2")] == [
        "worker-1",
        "worker-2",
    ]
    assert {n for n, s in stages.items() if s.restart} == {
        "capture",
        "compositor",
        "worker-1",
        "worker-2",
    }
    assert [n for n, s in stages.items() if s.ends_pipeline] == ["display"]
    assert [n for n, s in stages.items() if s.standby] == ["capture", "compositor"]


def test_stage_settings_are_validated_when_planning(tmp_path):
    with pytest.raises(FatalError, match="--blur"):
        plan(tmp_path, "--blur", "-3")
    with pytest.raises(FatalError, match="--width"):
        plan(tmp_path, "--width", "3")


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--infer-bind", "tcp://127.0.0.1:99999"], "port must be a number in 1..65535"),
        (["--infer-bind", "tcp://127.0.0.1:abc"], "port must be a number in 1..65535"),
        (["--infer-bind", "tcp://127.0.0.1"], "port must be a number in 1..65535"),
        (["--infer-bind", "udp://127.0.0.1:5551"], "must be tcp://HOST:PORT"),
        (["--infer-bind", "tcp://0.0.0.0:5551"], "must be encrypted"),
        (["--port-base", "80"], "--port-base 80 must be in 1024..65532"),
        (["--port-base", "65533"], "--port-base 65533 must be in 1024..65532"),
        (["--workers", "-1"], "--workers -1 must be >= 0"),
    ],
)
def test_bad_launcher_values_give_one_line_and_no_traceback(args, expect):
    r = run_launch(*args, "--model", "selfie", "--headless", timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
    assert r.stderr.startswith("launch: error: ") and expect in r.stderr, r.stderr
    assert "started" not in r.stdout  # nothing ran


def test_keys_are_made_by_their_own_step(tmp_path, capsys):
    keys = tmp_path / "keys"
    a = launch.parse_args(["--infer-bind", "tcp://0.0.0.0:5551", "--keys", str(keys)])
    launch.make_missing_keys(a)
    assert (keys / "compositor.key_secret").is_file() and (keys / "worker-local").is_dir()
    assert (keys / "worker-remote").is_dir()
    assert "--connect tcp://THIS_HOST:5551 --keys worker-remote" in capsys.readouterr().out
    launch.make_missing_keys(a)  # second run: nothing new, nothing printed
    assert capsys.readouterr().out == ""


def test_private_folder_is_owner_only_and_removed_at_exit():
    with private_folder() as folder:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert private(folder).control == f"ipc://{folder}/c"
    assert not folder.exists()


def test_too_long_a_socket_path_is_one_clear_error():
    long = Path("/tmp") / ("x" * (IPC_PATH_MAX - 6))
    with pytest.raises(FatalError, match="too long for a Unix socket path"):
        private(long)


def test_config_file_sets_flags_and_the_command_line_wins(tmp_path):
    cfg = tmp_path / "call.toml"
    cfg.write_text(
        'model = "selfie"\nblur = 2.0\nprivacy = false\nheadless = true\nno-refine = 1\n'
    )
    with pytest.raises(SystemExit):  # no-refine is not a setting name (refine is)
        launch.parse_args(["--config", str(cfg)])
    cfg.write_text(
        'model = "selfie"\nblur = 2.0\nprivacy = false\nheadless = true\nrefine = false\n'
    )
    a = launch.parse_args(["--config", str(cfg), "--blur", "3"])
    assert (a.model, a.blur, a.privacy, a.headless, a.refine) == ("selfie", 3.0, False, True, False)


def test_merge_stats_keeps_headlines_and_every_stage(tmp_path):
    (tmp_path / "capture.json").write_text(json.dumps({"capture_fps": 30.0, "frames_dropped": 1}))
    (tmp_path / "display.json").write_text(
        json.dumps({"display_fps": 29.5, "frames_displayed": 60, "frames_dropped": 2})
    )
    (tmp_path / "compositor.json").write_text("{half a fi")  # torn file: skipped, not fatal
    m = launch.merge_stats(tmp_path, tmp_path / "s.json")
    assert (m["capture_fps"], m["display_fps"], m["frames_dropped"]) == (30.0, 29.5, 3)
    assert set(m["stages"]) == {"capture", "display"}
    assert json.loads((tmp_path / "s.json").read_text()) == m


def test_mask_interval_raises_the_default_fail_closed_limit():
    """A resting worker's masks are up to an interval old: the limit follows, unless given."""
    a = launch.parse_args(["--model", "selfie", "--mask-interval", "2"])
    assert launch.default_mask_age(a) == 1.0 + 3.0
    assert launch.default_mask_age(launch.parse_args(["--model", "selfie"])) == 1.0


def test_the_example_config_file_is_valid_and_the_command_line_wins():
    path = Path(launch.__file__).resolve().parent / "docs" / "privacycam.example.toml"
    a = launch.parse_args(["--config", str(path)])
    assert (a.model, a.blur, a.mirror) == ("selfie", 2.0, True)
    assert launch.parse_args(["--config", str(path), "--blur", "4"]).blur == 4.0


def test_tcp_ports_inside_the_ephemeral_range_are_warned_about(tmp_path):
    """A base whose four ports touch the kernel's outgoing-connection range gets a warning (a
    stage can connect to itself there); below or above it, or with ipc links, none."""
    eph = range(32768, 61000)
    assert launch.port_base_warning("tcp", 5550, eph) is None
    assert launch.port_base_warning("tcp", 32764, eph) is None  # 32764..32767: just below
    assert "32768..60999" in launch.port_base_warning("tcp", 32765, eph)
    assert launch.port_base_warning("tcp", 40000, eph) is not None
    assert launch.port_base_warning("tcp", 60999, eph) is not None
    assert launch.port_base_warning("tcp", 61000, eph) is None
    assert launch.port_base_warning("ipc", 40000, eph) is None
    (tmp_path / "r").write_text("40000\t40100\n")
    assert launch.ephemeral_range(tmp_path / "r") == range(40000, 40101)
    (tmp_path / "r").write_text("garbage")
    assert launch.ephemeral_range(tmp_path / "r") == range(49152, 65536)

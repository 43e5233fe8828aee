"""Compositor: apply the newest mask to every frame, at camera rate, and hand out work to workers.

Frames arrive from capture; each one is composited at once with the newest mask available (newest
``frame_id`` wins, so a slow worker can never roll the picture back) and sent to the display. The
same frame becomes "the newest frame nobody is working on", handed to the next idle worker. Masks
arrive when they arrive. In privacy mode, a frame without a trustworthy mask (none yet, older than
``--max-mask-age``, from another stream) is hidden completely: privacy fails closed.

``--lockstep`` (offline): every frame waits for its own mask; nothing is dropped or reused.

Where what is (one job each):

* ``config.py``: the settings (``CompositorConfig``), the command line derived from them;
* ``workers.py``: which workers exist, idle or busy, and who timed out;
* ``dispatch.py``: hand-outs: in-flight frames, genuine masks, pacing, heartbeats;
* ``maskslot.py``: the applied mask: newest wins, its age, the hide-or-show verdict;
* ``control.py``: privacy on/off;
* ``picture.py``: masks into the compose state and motion compensator, frames into ``Output``;
* ``compose.py``/``background.py``: compositing; ``motion.py``: motion compensation;
* ``core.py``: what to do with each message; ``links.py``: the sockets; ``loop.py``: the loops
  that move messages between the two; this module: start-up.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from common.config import add_arguments, from_namespace
from common.runtime import Runtime
from common.stats import Stats
from compositor import compose, motion
from compositor.config import CompositorConfig
from compositor.core import Core
from compositor.dispatch import Dispatcher
from compositor.links import open_links
from compositor.loop import run_lockstep, run_realtime
from compositor.maskslot import MaskSlot
from compositor.motion import MotionCompensator
from compositor.picture import Picture
from compositor.workers import WorkerPool


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m compositor",
        description="Blur or replace the background of every frame with the newest person mask.",
    )
    add_arguments(p, CompositorConfig)
    return p


def parse(argv: Sequence[str] | None = None) -> CompositorConfig:
    """Settings from the command line, by keyword; invalid ones raise ``FatalError`` here."""
    config = from_namespace(CompositorConfig, build_parser().parse_args(argv))
    compose_settings(config)  # a bad colour is a start-up error too
    return config


def compose_settings(config: CompositorConfig) -> compose.ComposeSettings:
    color = config.background_color
    return compose.ComposeSettings(
        blur=config.blur,
        background=config.background,
        background_color=compose.parse_color(color) if color else None,
        refine=config.refine,
        temporal=config.temporal,
    )


def build(config: CompositorConfig, rt: Runtime) -> Core:
    """The compositor's parts, wired; opens the background (a bad file fails here)."""
    stats = Stats("compositor", rt.log, config.stats_json)
    # motion compensation of reused masks (issue 9): real time only, lock-step has its own masks
    motion = MotionCompensator() if config.motion and not config.lockstep else None
    if config.save_alpha:
        config.save_alpha.mkdir(parents=True, exist_ok=True)
    picture = Picture(
        compose.new_state(compose_settings(config)),
        MaskSlot(config.max_mask_age, lockstep=config.lockstep),
        stats,
        motion=motion,
        save_alpha=config.save_alpha,
    )
    dispatcher = Dispatcher(WorkerPool(config.worker_timeout), config.max_in_flight)
    return Core(dispatcher, picture, stats, rt.log, privacy=config.privacy)


def prepare() -> None:
    """Start-up work that needs no settings: a warm spare (launch.py) does it before it waits."""
    compose.warm_up()
    motion.warm_up()


def run(config: CompositorConfig, rt: Runtime) -> int:
    core = build(config, rt)
    prepare()  # the compiled kernels loaded before the first frame arrives, not on it
    links = open_links(config, rt.ctx)
    rt.log.info(
        "compositor: frames from %s, workers at %s, display at %s%s%s",
        config.frames,
        config.infer_bind,
        config.out_bind,
        " (lockstep)" if config.lockstep else "",
        "" if core.picture.motion is not None or config.lockstep else " (no motion compensation)",
    )
    try:
        return (run_lockstep if config.lockstep else run_realtime)(core, links, rt)
    finally:
        core.report_privacy(final=True)
        core.stats.tick(core.status(), force=True)
        links.close()

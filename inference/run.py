"""Inference worker: ask the compositor for work, segment the newest frame, send the mask back.

``python -m inference --connect tcp://HOST:PORT`` (it may run on another machine). The settings are
``inference.config.WorkerConfig``; the loop state is ``inference.worker.Worker``; this module only
wires them together: flags, priority, model, sockets, the loop, the exit.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from common import config as settings
from common import security
from common.endpoints import is_loopback
from common.runtime import Runtime
from common.stats import Stats
from inference.config import MODEL_FIELDS, WorkerConfig
from inference.forward import Forward
from inference.link import Link, check_resolves
from inference.pacing import MaskPacer
from inference.segmenter import SegmenterOptions
from inference.worker import Identity, Worker

KEEPALIVE_S = 5.0  # longest silence towards the compositor while resting (its timeout is 15 s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference",
        description="Segmentation worker: joins a pipeline's compositor and returns person masks. "
        "'python -m inference keys DIR --worker NAME' creates key pairs for remote workers.",
    )
    settings.add_arguments(p, WorkerConfig)
    return p


def add_model_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The model flags alone (for launch.py), derived from WorkerConfig like the worker's own."""
    skip = [f for f in WorkerConfig.__dataclass_fields__ if f not in MODEL_FIELDS]
    settings.add_arguments(p, WorkerConfig, skip=skip)


def parse(argv: Sequence[str] | None = None) -> WorkerConfig:
    return settings.from_namespace(WorkerConfig, build_parser().parse_args(argv))


def segmenter_options(config: WorkerConfig) -> SegmenterOptions:
    """The model knobs of ``config``, by keyword."""
    return SegmenterOptions(
        confidence=config.confidence,
        mask_threshold=config.mask_threshold,
        people=config.people,
        proposals=config.proposals,
        input_size=config.input_size,
        threads=config.threads,
        selfie_variant=config.selfie_variant,
        extra=dict(config.extra),
    )


def run(config: WorkerConfig, rt: Runtime) -> int:
    """Serve masks until stopped; every start-up check (keys, host, model) fails with one line."""
    check_resolves(config.connect)
    keys = security.client_keys(config.connect, config.keys)
    if config.nice:
        os.nice(config.nice)  # the camera-rate stages must win the CPU, masks come when they come
    import cv2  # after the checks: a bad flag or key should not wait for OpenCV

    from inference.segmenter import open_segmenter

    segmenter = open_segmenter(config.model, config.model_dir, segmenter_options(config))
    if config.threads:
        cv2.setNumThreads(config.threads)
    stats = Stats("inference", rt.log, config.stats_json, log_every=1.0 if config.verbose else 5.0)
    stats.live = lambda: {"inference_fps": round(stats.rate("masks_sent"), 3)}
    me = Identity(config.worker_name, config.model, not is_loopback(config.connect))
    worker = Worker(
        me,
        Link(rt.ctx, config.connect, keys, me.name, security.link_key(config.link_keys)),
        Forward(segmenter.segment),
        stats,
        MaskPacer(config.mask_interval, min(KEEPALIVE_S, config.liveness)),
        config.liveness,
        rt.stopping,
    )
    worker.start()
    rt.log.info("worker %s (%s) asking %s for work", me.name, me.model, config.connect)
    try:
        while not rt.stopping() and worker.step():
            stats.tick(worker.status())
    finally:
        stats.tick(worker.status(), force=True)
        worker.forward.close()
        worker.link.close()
    return 0

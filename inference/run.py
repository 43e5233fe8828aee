"""Inference worker: ask the compositor for work, segment the newest frame, send the mask back.

The worker *asks* (ZeroMQ Guide load-balancing pattern): it sends READY, the compositor answers with
the newest frame nobody is working on, the worker replies with the mask, which also says "ready
again". So each worker has at most one frame in flight and no queue can grow, however slow the
model. While idle it gets a heartbeat every second; if the compositor goes silent (restarted,
network gone), the worker closes its socket, opens a new one and says READY again (Lazy Pirate), so
it rejoins a restarted compositor without anyone touching it. It may run on another machine:
``python -m inference --connect tcp://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import os
import socket as pysocket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import zmq

from common import protocol, security, sockets
from common.errors import FatalError
from common.runtime import Runtime
from common.stats import Stats
from inference.segmenter import SegmenterOptions, available, open_segmenter

DEFAULT_CONNECT = "tcp://127.0.0.1:5551"


@dataclass(frozen=True)
class WorkerConfig:
    connect: str = DEFAULT_CONNECT
    model: str = "maskrcnn"
    model_dir: Path | None = None
    options: SegmenterOptions = SegmenterOptions()
    name: str = ""
    nice: int = 0
    liveness: float = 5.0
    stats_json: Path | None = None
    keys: Path | None = None  # folder with this worker's key pair and the compositor's public key


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model flags, shared with launch.py so both spell them the same way."""
    p.add_argument("--model", default="maskrcnn", help="segmentation model: maskrcnn or selfie")
    p.add_argument("--model-dir", type=Path, default=None, help="folder holding the model's files")
    p.add_argument(
        "--confidence", type=float, default=0.5, help="Mask R-CNN person score threshold"
    )
    p.add_argument("--mask-threshold", type=float, default=0.3, help="Mask R-CNN mask threshold")
    p.add_argument(
        "--people",
        choices=("main", "all"),
        default="main",
        help="keep the main person at the camera, or everyone",
    )
    p.add_argument(
        "--proposals",
        type=int,
        default=100,
        help="Mask R-CNN detections kept (100 = as shipped; 20 is ~6x faster)",
    )
    p.add_argument("--input-size", type=int, default=0, help="model input size (0 = default)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="OpenCV threads for inference (0 = all cores; runs at low priority)",
    )
    p.add_argument("--selfie-variant", choices=("auto", "square", "landscape"), default="auto")


def model_options(a: argparse.Namespace) -> SegmenterOptions:
    """Validated SegmenterOptions from parsed model flags."""
    if not 0.0 <= a.confidence <= 1.0 or not 0.0 <= a.mask_threshold < 1.0:
        raise FatalError("--confidence must be in [0, 1] and --mask-threshold in [0, 1)")
    if not 1 <= a.proposals <= 100:
        raise FatalError(f"--proposals {a.proposals} must be between 1 and 100")
    if a.threads < 0 or a.input_size < 0:
        raise FatalError("--threads and --input-size must be >= 0")
    if a.model not in available():
        raise FatalError(f"unknown --model {a.model!r}; choose one of: {', '.join(available())}")
    return SegmenterOptions(
        confidence=a.confidence,
        mask_threshold=a.mask_threshold,
        people=a.people,
        proposals=a.proposals,
        input_size=a.input_size,
        threads=a.threads,
        selfie_variant=a.selfie_variant,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference",
        description="Segmentation worker: joins a pipeline's compositor and returns person masks. "
        "'python -m inference keys DIR' creates key pairs for remote workers.",
    )
    p.add_argument("--connect", default=DEFAULT_CONNECT, help="the compositor's worker endpoint")
    add_model_arguments(p)
    p.add_argument("--name", default="", help="worker name in stats (default host-pid)")
    p.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N")
    p.add_argument(
        "--liveness",
        type=float,
        default=5.0,
        help="seconds of compositor silence before reconnecting",
    )
    p.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="key folder (from 'keys') for encrypted non-loopback links",
    )
    p.add_argument("--stats-json", type=Path, default=None, help="write stats JSON here")
    return p


def parse(argv: Sequence[str] | None = None) -> WorkerConfig:
    a = build_parser().parse_args(argv)
    if not a.connect.startswith(("tcp://", "ipc://")):
        raise FatalError(f"--connect {a.connect!r} must look like tcp://HOST:PORT")
    if a.liveness <= 0.5:
        raise FatalError("--liveness must be more than 0.5 s (heartbeats come every second)")
    name = a.name or f"{pysocket.gethostname()}-{os.getpid()}"
    return WorkerConfig(
        a.connect,
        a.model,
        a.model_dir,
        model_options(a),
        name,
        a.nice,
        a.liveness,
        a.stats_json,
        a.keys,
    )


def _connect(rt: Runtime, config: WorkerConfig) -> zmq.Socket:
    sock = sockets.make_socket(rt.ctx, zmq.DEALER)
    security.client(sock, config.connect, config.keys)
    sock.connect(config.connect)
    _send(sock, _ready(config))  # queued until the connection is up (no IMMEDIATE on DEALER)
    return sock


def _ready(config: WorkerConfig) -> list:
    return protocol.encode(protocol.READY, worker=config.name, model=config.model)


def _send(sock: zmq.Socket, parts: list) -> bool:
    """Send, or False if the compositor has not taken it within the socket's send timeout."""
    try:
        sock.send_multipart(parts, copy=False)
        return True
    except zmq.Again:
        return False


def run(config: WorkerConfig, rt: Runtime) -> int:
    """Serve masks until stopped; reconnect whenever the compositor has been silent too long."""
    if config.nice:
        os.nice(config.nice)  # the camera-rate stages must win the CPU, masks come when they come
    segmenter = open_segmenter(config.model, config.model_dir, config.options)
    if config.options.threads:
        cv2.setNumThreads(config.options.threads)
    stats = Stats("inference", rt.log, config.stats_json)
    stats.live = lambda: {"inference_fps": round(stats.rate("masks_sent"), 3)}
    bad = sockets.BadMessages()
    remote = not sockets.is_loopback(config.connect)
    sock = _connect(rt, config)
    rt.log.info("worker %s (%s) asking %s for work", config.name, config.model, config.connect)
    last_heard = time.monotonic()
    infer_ms: list[float] = []
    while not rt.stopping():
        if not sock.poll(100):
            if time.monotonic() - last_heard > config.liveness:
                rt.log.warning("compositor silent for %.1f s, reconnecting", config.liveness)
                stats.count("reconnects")
                sock.close(0)
                sock = _connect(rt, config)
                last_heard = time.monotonic()
            stats.tick(_status(stats, infer_ms))
            continue
        parts = sockets.recv_parts(sock)
        if parts is None:
            continue
        last_heard = time.monotonic()
        msg = sockets.decode_or_count(parts, bad, time.time())
        if msg is None:
            continue
        sent = True
        if msg.kind == protocol.HEARTBEAT:
            sent = _send(sock, _ready(config))
        elif msg.kind == protocol.FRAME and msg.image is not None and msg.image.ndim == 3:
            stats.count("frames_received")
            t0 = time.perf_counter()
            result = _segment_interruptibly(segmenter, msg.image, rt)
            if result is None:  # asked to stop mid-forward
                break
            if isinstance(result, Exception):
                rt.log.error("model failed on frame %s: %s", msg.header["frame_id"], result)
                stats.count("errors")
                sent = _send(sock, _ready(config))
                continue
            ms = (time.perf_counter() - t0) * 1000
            infer_ms.append(ms)
            stats.sample("infer_ms", ms)
            stats.count("masks_sent")
            h = msg.header
            sent = _send(
                sock,
                protocol.encode(
                    protocol.MASK,
                    result.mask,
                    enc="png" if remote else "raw",
                    frame_id=h["frame_id"],
                    ts=h["ts"],
                    stream=h.get("stream", 0),
                    worker=config.name,
                    infer_ms=round(ms, 1),
                ),
            )
            last_heard = time.monotonic()
        else:
            bad(f"unexpected {msg.kind} message", time.time())
        if not sent:  # the compositor is not taking messages: reconnect at the next idle poll
            last_heard = float("-inf")
        stats.tick(_status(stats, infer_ms))
    stats.tick(force=True)
    sock.close(0)
    return 0


def _segment_interruptibly(segmenter, image, rt: Runtime):
    """Run the forward pass in a helper thread so SIGTERM/SIGINT stop the worker at once.

    A Mask R-CNN forward pass takes seconds inside OpenCV, where Python cannot deliver signals; the
    main thread waits on it with a timeout instead, and simply leaves (the thread is a daemon) if
    asked to stop. Returns the Segmentation, the exception it raised, or None when stopping.
    """
    box: list = []
    done = threading.Event()

    def work() -> None:
        try:
            box.append(segmenter.segment(image))
        except Exception as exc:  # reported by the caller as one line; the worker goes on
            box.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name="forward", daemon=True).start()
    while not done.wait(0.1):
        if rt.stopping():
            return None
    return box[0]


def _status(stats: Stats, infer_ms: list[float]) -> str:
    last = f"{infer_ms[-1]:.0f} ms" if infer_ms else "-"
    return (
        f"{stats.recent_rate('masks_sent'):.2f} masks/s, last forward {last}, "
        f"{stats.counts['masks_sent']} sent, {stats.counts['reconnects']} reconnects"
    )

"""Stage runtime: logging, clean stop on SIGINT/SIGTERM, one-line errors, the ZeroMQ context.

Each stage's ``__main__`` calls ``main(name, parse, run)``. ``parse(argv)`` builds the stage's
frozen settings (raising ``FatalError`` for invalid ones) and ``run(config, runtime)`` does the
work, looping until ``runtime.stopping()``. Every loop waits on sockets with a timeout of at most
~100 ms, so a signal is honoured promptly without sleep-polling.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from common.errors import FatalError


@dataclass
class Runtime:
    """What a running stage gets besides its settings: its name, logger, zmq context, stop flag."""

    name: str
    log: logging.Logger
    ctx: zmq.Context
    stop_event: threading.Event = field(default_factory=threading.Event)

    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def stop(self) -> None:
        self.stop_event.set()


def setup_logging(level: int = logging.INFO) -> None:
    """Plain one-line records; the launcher prefixes each line with the stage's name."""
    logging.basicConfig(
        level=level, format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )


def main(
    name: str,
    parse: Callable[[Sequence[str] | None], Any],
    run: Callable[[Any, Runtime], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Run a stage: parse settings, install signal handlers, map errors to one line + exit code."""
    setup_logging()
    log = logging.getLogger(name)
    try:
        config = parse(argv)
    except FatalError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    ctx = zmq.Context()
    runtime = Runtime(name=name, log=log, ctx=ctx)

    def on_signal(signum: int, _frame: Any) -> None:
        if runtime.stopping():  # second Ctrl-C: the user means it
            raise KeyboardInterrupt
        log.info("%s received, stopping", signal.Signals(signum).name)
        runtime.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        code = run(config, runtime) or 0
    except FatalError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    finally:
        ctx.destroy(linger=0)
    return code

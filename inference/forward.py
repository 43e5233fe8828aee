"""The forward pass on one long-lived helper thread, so SIGTERM/SIGINT stop the worker at once.

A Mask R-CNN forward pass takes seconds inside OpenCV, where Python cannot deliver signals; the
main thread waits on the helper with a timeout instead, and simply leaves if asked to stop (the
thread is a daemon). One thread for the whole run, fed one picture at a time, not a new thread per
frame: every new thread gets its own OpenCV thread-local buffers and allocator state, which is
where a worker's memory crept up over long runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np


class Forward:
    """Runs ``segment(image)`` on its thread; ``run`` returns the result, its exception, or None."""

    def __init__(self, segment: Callable[[np.ndarray], Any]) -> None:
        self._segment = segment
        self._jobs: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: Any = None
        self._thread = threading.Thread(target=self._loop, name="forward", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            image = self._jobs.get()
            if image is None:
                return
            try:
                self._result = self._segment(image)
            except Exception as exc:  # reported by the caller as one line; the worker goes on
                self._result = exc
            self._done.set()

    def run(self, image: np.ndarray, stopping: Callable[[], bool], step: float = 0.1) -> Any:
        """The segmentation of ``image`` (or the exception it raised); None if stopping first."""
        self._done.clear()
        self._jobs.put(image)
        while not self._done.wait(step):
            if stopping():
                return None
        result, self._result = self._result, None
        return result

    def close(self) -> None:
        self._jobs.put(None)

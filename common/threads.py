"""One BLAS thread for the camera-rate stages, set before numpy or OpenCV is loaded.

Why: OpenCV's wheels bundle OpenBLAS, and ``cv2.gemm`` (the compositor's per-pixel band step)
runs through it; its worker threads then spin (``sched_yield``) waiting for the next call.
Measured in the pipeline (640x360 at 30 fps, selfie model): the compositor used 12.6 s of CPU in
11 s, 7.5 s of it in the kernel (96,000 ``sched_yield`` calls in 4 s); with one BLAS thread 4.1 s.
Nothing these stages hand to BLAS is large enough for more threads to pay. The inference worker
is left alone: a model may use BLAS for real work (its threads are ``--threads``).

OpenBLAS reads the variable once, when the library loads: call this first thing in a stage's
``__main__``. A value the user set is kept.
"""

import os


def one_blas_thread() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

"""``python -m capture --help``"""

import os
import sys

# OpenCV/FFmpeg print multi-line native warnings for a missing camera or a bad file; we report those
# as one clear line ourselves. Set OPENCV_LOG_LEVEL=INFO to see them when debugging.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
from common.threads import one_blas_thread  # noqa: E402

one_blas_thread()  # before numpy and OpenCV load (see common/threads.py)

from capture.run import parse, run  # noqa: E402
from common.runtime import main  # noqa: E402

sys.exit(main("capture", parse, run))

"""``python -m inference --connect tcp://HOST:PORT`` runs a worker; ``... keys DIR`` makes keys."""

import os
import sys

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from common.runtime import main  # noqa: E402
from inference.keys import main as keys_main  # noqa: E402
from inference.run import parse, run  # noqa: E402

if len(sys.argv) > 1 and sys.argv[1] == "keys":
    sys.exit(keys_main(sys.argv[2:]))
code = main("inference", parse, run)
# A forward pass still running inside OpenCV (the worker was stopped mid-pass) cannot be joined;
# letting the interpreter tear down around it ends in C++'s "terminate called without an active
# exception" and SIGABRT. Everything worth keeping (stats, logs) is written by now: leave at once.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)

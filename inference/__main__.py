"""``python -m inference --connect tcp://HOST:PORT`` runs a worker; ``... keys DIR`` makes keys."""

import os
import sys

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from common.runtime import main  # noqa: E402
from inference.keys import main as keys_main  # noqa: E402
from inference.run import parse, run  # noqa: E402

if len(sys.argv) > 1 and sys.argv[1] == "keys":
    sys.exit(keys_main(sys.argv[2:]))
sys.exit(main("inference", parse, run))

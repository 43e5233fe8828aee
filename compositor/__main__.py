"""``python -m compositor --help``"""

import sys

from common.threads import one_blas_thread

one_blas_thread()  # before numpy and OpenCV load (see common/threads.py)

from common.runtime import main  # noqa: E402
from compositor.run import parse, run  # noqa: E402

sys.exit(main("compositor", parse, run))

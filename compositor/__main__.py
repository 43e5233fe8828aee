"""``python -m compositor --help``"""

import sys

from common.runtime import main
from compositor.run import parse, run

sys.exit(main("compositor", parse, run))

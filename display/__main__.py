"""``python -m display --help``"""

import sys

from common.runtime import main
from display.run import parse, run

sys.exit(main("display", parse, run))

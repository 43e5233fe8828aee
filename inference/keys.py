"""``python -m inference keys DIR --worker NAME``: key pairs for encrypted remote workers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import FatalError
from common.security import make_keys


def main(argv: Sequence[str] | None = None) -> int:
    """Create the compositor's key pair (once) and one worker's; print what to copy where."""
    p = argparse.ArgumentParser(
        prog="python -m inference keys",
        description="Create CurveZMQ keys: the compositor's pair (once) and one pair per worker.",
    )
    p.add_argument("folder", type=Path, help="key folder on the compositor's machine")
    p.add_argument("--worker", default="worker1", help="name of the worker to create keys for")
    a = p.parse_args(argv)
    try:
        bundle = make_keys(a.folder, a.worker)
    except (FatalError, OSError) as exc:
        print(f"keys: error: {exc}", file=sys.stderr)
        return 2
    print(f"compositor: python launch.py --infer-bind tcp://0.0.0.0:5551 --keys {a.folder} ...")
    print(f"worker:     copy {bundle} to the worker machine, then")
    print(f"            python -m inference --connect tcp://THIS_HOST:5551 --keys {bundle.name}")
    return 0

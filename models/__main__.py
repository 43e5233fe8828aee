"""``python -m models fetch [MODEL]`` / ``python -m models list``: get model files ahead of time.

Why: the first start of the camera should not stall on a 170 MB download, and offline machines
need a way to see exactly which file is expected where.
"""

from __future__ import annotations

import argparse
import sys

from common.errors import FatalError
from models import store


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    manifest = store.load_manifest()
    parser = argparse.ArgumentParser(
        prog="python -m models",
        description="Fetch and locate privacycam model files (hash-checked against "
        "models/manifest.json).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download missing files of MODEL (default: all models)")
    fetch.add_argument("model", nargs="?", choices=sorted(manifest), help="model name")
    sub.add_parser("list", help="show where each model file resolves now")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            sys.stdout.write(store.describe(manifest))
            return 0
        for model in [args.model] if args.model else sorted(manifest):
            paths = store.resolve(model, manifest=manifest)
            for key, path in paths.items():
                print(f"{model}.{key}: {path}")
        return 0
    except FatalError as e:
        print(f"models: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("models: interrupted; no partial file was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

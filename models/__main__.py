"""``python -m models fetch [MODEL]`` / ``python -m models list``: get model files ahead of time.

Why: the first start of the camera should not stall on a 170 MB download, and offline machines
need a way to see exactly which file is expected where.

``fetch`` tries every model asked for, even after one failed, and prints one line per model
(fetched / already there / failed: reason); the exit code is 2 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from common.errors import FatalError
from models import store


def build_parser(manifest: dict) -> argparse.ArgumentParser:
    """The CLI; every help text names its choices and its default."""
    models = sorted(manifest)
    choices = ", ".join(models)
    parser = argparse.ArgumentParser(
        prog="python -m models",
        description="Fetch and locate privacycam model files (hash-checked against "
        "models/manifest.json).",
        epilog=(
            f"models: {choices}. Files are looked up in models/files/<folder>/, then "
            f"{store.cache_root()}/<folder>/ (the user cache, where downloads go), then "
            f"${store.MIRROR_ENV}/<folder>/ (now: {os.environ.get(store.MIRROR_ENV) or 'unset'}); "
            f"{store.NO_DOWNLOAD_ENV}=1 turns downloads off "
            f"(now: {os.environ.get(store.NO_DOWNLOAD_ENV) or 'unset'})."
        ),
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{fetch,list}", help="what to do (no default)"
    )
    fetch = sub.add_parser(
        "fetch",
        help=f"download and check the files of MODEL (choices: {choices}; default: all of them)",
        description="Download the missing files of MODEL into the user cache and hash-check all "
        "of them; every model is tried and reported on its own line.",
    )
    fetch.add_argument(
        "model",
        nargs="?",
        choices=models,
        metavar="MODEL",
        help=f"model to fetch (choices: {choices}; default: all of them)",
    )
    sub.add_parser(
        "list",
        help="show where each model file resolves now (no arguments)",
        description="Show where each file of every model resolves now; nothing is downloaded.",
    )
    return parser


def fetch(models: list[str], manifest: dict) -> int:
    """Fetch each model in turn, one report line each; 2 if any failed, else 0."""
    failed = []
    for model in models:
        report = store.fetch_model(model, manifest)
        print(report.line(), flush=True)
        if not report.ok:
            failed.append(model)
    if failed:
        print(
            f"models: error: {len(failed)} of {len(models)} model(s) failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return FatalError.exit_code
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        manifest = store.load_manifest()
        args = build_parser(manifest).parse_args(argv)
        if args.command == "list":
            sys.stdout.write(store.describe(manifest))
            return 0
        return fetch([args.model] if args.model else sorted(manifest), manifest)
    except FatalError as e:
        print(f"models: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("models: interrupted; no partial file was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The code base stays ruff-clean, small in its parts, and its tests wait on events, not sleeps."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

STAGE_CODE = ["capture", "inference", "compositor", "display", "models", "common", "launch.py"]
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 200
MAX_TEST_SLEEPS = 5


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    """Through ``python -m ruff`` so it is the ruff of this interpreter (venv or not)."""
    r = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    if r.returncode != 0 and "No module named ruff" in r.stderr:
        pytest.fail("ruff is not installed: pip install -r requirements-dev.txt")
    assert r.returncode == 0, r.stdout + r.stderr


def _python_files(names):
    for name in names:
        path = REPO / name
        yield from [path] if path.is_file() else sorted(path.rglob("*.py"))


def _sizes(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.end_lineno - node.lineno + 1


def test_functions_and_classes_stay_small():
    """Issue 8's rule: no function over 60 lines, no class over 200, in the stage code."""
    too_big = []
    for path in _python_files(STAGE_CODE):
        for node, lines in _sizes(path):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if lines > limit:
                too_big.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines} lines")
    assert not too_big, "\n".join(too_big)


def test_tests_wait_on_events_not_sleeps():
    """Fixed sleeps make tests slow and flaky; wait on a message, file or stats line instead."""
    sleeps = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "sleep":
                sleeps.append(f"{path.name}:{node.lineno}")
    assert len(sleeps) <= MAX_TEST_SLEEPS, "\n".join(sleeps)

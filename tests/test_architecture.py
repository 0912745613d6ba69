"""The package keeps its shape: layers point down, types check, modules and functions stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dbatch"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_layers_only_point_down():
    """The import-linter contract of pyproject.toml: cli -> ... -> core, peers apart."""
    pytest.importorskip("importlinter")
    script = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "KEPT" in found.stdout


def test_the_package_type_checks():
    pytest.importorskip("mypy")
    found = run("mypy", "--no-error-summary")
    assert found.returncode == 0, found.stdout + found.stderr


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    start = body[1].lineno if docstring and len(body) > 1 else first.lineno
    return (node.end_lineno or start) - start + 1


def test_modules_and_functions_stay_small():
    """No module over about 400 lines, no function body over about 60."""
    big_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 420:
            big_modules.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > 65:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.name}: {_body_lines(node)}")
    assert not big_modules, big_modules
    assert not long_functions, long_functions


#: The modules users program against: strictly typed.
PUBLIC_API = [
    "dbatch/__init__.py",
    "dbatch/pipeline.py",
    "dbatch/core.py",
    "dbatch/errors.py",
    "dbatch/protocols.py",
    "dbatch/listeners.py",
    "dbatch/retry.py",
    "dbatch/reconcile.py",
]


def test_the_public_api_is_strictly_typed():
    pytest.importorskip("mypy")
    found = run("mypy", "--strict", "--follow-imports=silent", "--no-error-summary", *PUBLIC_API)
    assert found.returncode == 0, found.stdout + found.stderr

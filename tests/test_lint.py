"""Lint: ruff finds nothing in the package and the tests; the pre-commit hooks run the same."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff")
    found = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "dbatch", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 0, found.stdout + found.stderr


def test_pre_commit_runs_ruff_and_mypy_of_the_environment():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert hooks["ruff"]["entry"].startswith("ruff check")
    assert hooks["mypy"]["entry"] == "mypy" and hooks["mypy"]["pass_filenames"] is False
    assert hooks["ruff-format"]["stages"] == ["manual"]
    for hook in hooks.values():  # no download: the versions of the [test] extra
        assert hook["language"] == "system"
        assert shutil.which(hook["entry"].split()[0]) or pytest.skip(f"{hook['entry']} absent")

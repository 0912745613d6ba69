"""Configuration: packaged defaults in dask.config, DASK_DBATCH__* variables, nothing written home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask
import yaml

import dbatch
from dbatch import config


def python(code: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
        cwd=cwd,
    )


def test_packaged_defaults_are_in_dask_config():
    packaged = yaml.safe_load(Path(dbatch.__file__).with_name("dbatch.yaml").read_text())
    assert dask.config.get("dbatch.retry.attempts") == packaged["dbatch"]["retry"]["attempts"] == 3
    assert dask.config.get("dbatch.cluster.host") == "127.0.0.1"
    assert dask.config.get("dbatch.bad-input.mode") == "quarantine"
    assert config.get("batching.target-bytes") == "256MiB"


def test_defaults_file_is_commented():
    text = Path(dbatch.__file__).with_name("dbatch.yaml").read_text()
    comments = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert len(comments) >= 10


def test_values_are_read_at_call_time():
    with dask.config.set({"dbatch.retry.attempts": 9}):
        assert config.get("retry.attempts") == 9
        from dbatch.runner import RetryPolicy

        assert RetryPolicy().attempts == 9
    assert config.get("retry.attempts") == 3


def test_environment_variables_override_defaults(tmp_path):
    proc = python(
        "import dask, dbatch; from dbatch.runner import RetryPolicy;"
        "print(dask.config.get('dbatch.retry.attempts'), RetryPolicy().attempts,"
        " dask.config.get('dbatch.bad-input.mode'))",
        env={
            "HOME": str(tmp_path),
            "DASK_DBATCH__RETRY__ATTEMPTS": "7",
            "DASK_DBATCH__BAD_INPUT__MODE": "drop",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", "7", "drop"]


def test_a_user_config_file_overrides_defaults(tmp_path):
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "mine.yaml").write_text("dbatch:\n  retry:\n    attempts: 11\n")
    proc = python(
        "import dask, dbatch; print(dask.config.get('dbatch.retry.attempts'),"
        " dask.config.get('dbatch.retry.worker-deaths'))",
        env={"HOME": str(tmp_path), "DASK_CONFIG": str(tmp_path / "dask")},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["11", "2"]  # the rest keeps the packaged defaults


def test_import_writes_nothing_to_home_or_cwd(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = python(
        "import dbatch, dbatch.cli, dbatch.spec, dbatch.runner; print(dbatch.__version__)",
        env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")},
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    assert list(home.rglob("*")) == []
    assert list(cwd.rglob("*")) == []

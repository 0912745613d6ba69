"""Shared fixtures: real LocalClusters, a real PostgreSQL server, headless Chromium.

Tests that need PostgreSQL or Chromium skip with the reason when those are
absent; with DBATCH_STRICT_SERVICES=1 (set by .ci/run) they fail instead, so CI
always runs every test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import dask
import distributed  # noqa: F401  (load distributed's config defaults before any dask.config.set)
import pytest

ROOT = Path(__file__).resolve().parent.parent
STRICT = os.environ.get("DBATCH_STRICT_SERVICES") == "1"
PG_URL = os.environ.get("DBATCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def unavailable(reason: str):
    if STRICT:
        pytest.fail(f"{reason} (DBATCH_STRICT_SERVICES=1: CI must run every test)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _quiet_config(tmp_path, monkeypatch):
    """Each test gets its own work area and a dashboard on a free loopback port."""
    monkeypatch.chdir(tmp_path)
    with dask.config.set(
        {
            "dbatch.cluster.dashboard-address": "127.0.0.1:0",
            "dbatch.progress.mode": "off",
            "dbatch.retry.backoff-base": 0.05,
            # Test files are tiny: one bad row in five is 20%. Tests of the default
            # (dbatch.yaml's 0.05) set it back themselves.
            "dbatch.bad-input.max-bad-fraction": 1.0,
            "distributed.worker.daemon": False,
        }
    ):
        yield


@contextlib.contextmanager
def local_client():
    """A LocalCluster of 2 worker processes x 1 thread, loopback only, and its client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="session")
def client():
    """A session-wide cluster (``local_client``)."""
    with local_client() as c:
        yield c


@pytest.fixture
def postgres_url():
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_URL)
        with engine.connect() as con:
            con.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001
        unavailable(f"needs PostgreSQL at {PG_URL.split('@')[-1]}: {type(e).__name__}")
    return PG_URL


@pytest.fixture(scope="session")
def chromium_driver():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        unavailable("needs headless Chromium and chromedriver (Debian: chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield d
    finally:
        d.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REDIS_URL = os.environ.get("DBATCH_TEST_REDIS", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("DBATCH_TEST_NATS", "nats://127.0.0.1:4222")
MQTT_HOST = os.environ.get("DBATCH_TEST_MQTT", "127.0.0.1:1883")


@pytest.fixture
def redis_url():
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as e:  # noqa: BLE001
        unavailable(f"needs Redis at {REDIS_URL.split('@')[-1]}: {type(e).__name__}: {e}")
    return REDIS_URL


@pytest.fixture
def nats_url():
    try:
        import asyncio

        import nats

        async def probe():
            nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()

        asyncio.run(probe())
    except Exception as e:  # noqa: BLE001
        unavailable(f"needs NATS with JetStream at {NATS_URL}: {type(e).__name__}: {e}")
    return NATS_URL


def find_mqtt() -> tuple[str, int]:
    """The MQTT broker's (host, port); raises with the reason when none answers."""
    host, _, port = MQTT_HOST.partition(":")
    try:
        with socket.create_connection((host, int(port or 1883)), timeout=2):
            pass
        import paho.mqtt  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise LookupError(
            f"needs an MQTT broker (Mosquitto) at {MQTT_HOST}: {type(e).__name__}: {e}"
        ) from None
    return host, int(port or 1883)


@pytest.fixture(params=["redis", "nats"])
def broker(request):
    """A fresh stream on the real Redis, then on the real NATS JetStream (tests/streams_brokers.py)."""
    from streams_brokers import NatsBroker, RedisBroker

    if request.param == "redis":
        b = RedisBroker(request.getfixturevalue("redis_url"))
    else:
        b = NatsBroker(request.getfixturevalue("nats_url"))
    yield b
    b.close()


@pytest.fixture
def mqtt_host():
    try:
        return find_mqtt()
    except LookupError as e:
        unavailable(str(e))


def _mqtt_env() -> dict[str, str]:
    host, port = find_mqtt()
    return {"MQTT_BROKER": f"{host}:{port}"}


# A service a notebook may name in its metadata ("dbatch": {"services": [...]}): the
# environment that tells its kernel where the service is (LookupError: it is absent).
NOTEBOOK_SERVICES = {"mqtt": _mqtt_env}


def notebook_environment(paths: list[Path]) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of the notebooks' services, and the notebooks that cannot run (why)."""
    import nbformat

    env: dict[str, str] = {}
    not_run: dict[str, str] = {}
    for path in paths:
        services = nbformat.read(path, as_version=4).metadata.get("dbatch", {}).get("services", [])
        for service in services:
            if service not in NOTEBOOK_SERVICES:
                raise AssertionError(
                    f"{path.name} needs {service!r}; known: {sorted(NOTEBOOK_SERVICES)}"
                )
            try:
                env.update(NOTEBOOK_SERVICES[service]())
            except LookupError as e:
                not_run[path.name] = str(e)
    return env, not_run


@dataclasses.dataclass(frozen=True)
class DocsSite:
    """The documentation site built once for the session, and the runs of its notebooks."""

    html: Path
    runs: Path  # <runs>/NAME.ipynb executed, <runs>/NAME/ the folder it ran in
    stderr: str
    not_run: dict[str, str]  # notebooks shown as stored: a service they need is absent


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory) -> DocsSite:
    """The site built from copies of docs/ and notebooks/, executing every notebook once.

    tests/test_docs.py checks the pages and tests/test_notebooks.py the executed
    notebooks of this one build; both modules are in one xdist group, so that the
    notebooks run once per test session.
    """
    pytest.importorskip(
        "sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'"
    )
    pytest.importorskip(
        "nbclient", reason="the docs extra is not installed: pip install -e '.[docs]'"
    )
    work = tmp_path_factory.mktemp("site")
    ignore = shutil.ignore_patterns("_build", "generated", ".ipynb_checkpoints", "__pycache__")
    shutil.copytree(ROOT / "docs", work / "docs", ignore=ignore)
    shutil.copytree(ROOT / "notebooks", work / "notebooks", ignore=ignore)
    out, runs = work / "html", work / "notebook-runs"
    services, not_run = notebook_environment(sorted((ROOT / "notebooks").glob("*.ipynb")))
    env = {**os.environ, **services, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    command = [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html"]
    command += ["-D", "dbatch_notebook_execution=force", "-D", f"dbatch_notebook_runs={runs}"]
    if not_run:
        command += ["-D", f"dbatch_notebook_exclude={','.join(sorted(not_run))}"]
    done = subprocess.run(
        [*command, str(work / "docs"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-8000:]
    assert "WARNING" not in done.stderr, done.stderr[-8000:]
    return DocsSite(out, runs, done.stderr, not_run)

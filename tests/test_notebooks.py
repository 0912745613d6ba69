"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel.

A notebook that needs a service names it in its metadata (``"dbatch": {"services":
["mqtt"]}``); the test then asks for the suite's fixture of that service, which
skips with the reason when it is absent (fails under DBATCH_STRICT_SERVICES=1),
and tells the kernel where the service is by an environment variable.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def execute(path: Path, workdir: Path):
    """Run a copy of the notebooks folder with the kernel's cwd in ``workdir``."""
    shutil.copytree(
        path.parent,
        workdir,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", ".dbatch", "__pycache__"),
    )
    nb = nbformat.read(workdir / path.name, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        startup_timeout=120,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return nb


def needs(path: Path) -> list[str]:
    """The services a notebook names in its metadata."""
    return list(nbformat.read(path, as_version=4).metadata.get("dbatch", {}).get("services", []))


def _mqtt_env(found) -> dict[str, str]:
    host, port = found
    return {"MQTT_BROKER": f"{host}:{port}"}


# A service a notebook may need: the fixture that finds it, and how the kernel is told.
SERVICES = {"mqtt": ("mqtt_host", _mqtt_env)}


def outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def text_of(nb) -> str:
    parts = []
    for out in outputs(nb):
        parts.append(out.get("text", ""))
        for mime in ("text/plain", "text/html"):
            value = out.get("data", {}).get(mime, "")
            parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts)


def check_quickstart(nb, workdir: Path) -> None:
    """The quickstart shows the link, the plan, a widget and a plot, and writes real output."""
    mimes = {mime for out in outputs(nb) for mime in out.get("data", {})}
    assert WIDGET_MIME in mimes, "the run did not display the progress widget"
    assert "image/png" in mimes, "no plot was drawn"
    text = text_of(nb)
    assert "Dask dashboard" in text and "http://127.0.0.1:" in text
    assert "dbatch plan" in text  # the plan's HTML repr
    assert "dbatch run" in text and "succeeded" in text  # the RunResult's repr
    assert "nothing_to_do" in text  # the second run recomputed nothing
    out = workdir / "quickstart-data" / "out" / "daily_totals"
    assert (out / "_SUCCESS").exists()
    import pandas as pd

    totals = pd.read_parquet(out)
    assert len(totals) > 0 and set(totals["currency"]) == {"USD", "EUR", "GBP", "JPY", "CHF"}


def check_monitoring(nb, workdir: Path) -> None:
    """The monitoring notebook links the page, reads the metrics and names the failed step."""
    text = text_of(nb)
    assert "dbatch page: 200 http://127.0.0.1:" in text and "/dbatch" in text
    assert "committed: 11.0 failed: 1.0 rows quarantined: 1.0" in text
    assert "failed step: map" in text.lower() and "impossible temperature 9999.5" in text
    assert "succeeded - 1 batch computed, 11 already done" in text
    assert "last success: 20" in text
    out = workdir / "monitoring-data" / "out" / "readings"
    assert (out / "_SUCCESS").exists()


def check_streams(nb, workdir: Path) -> None:
    """Hourly partitions, a live aggregate that grew run by run, each reading once."""
    import pandas as pd

    mimes = {mime for out in outputs(nb) for mime in out.get("data", {})}
    assert "image/png" in mimes, "no plot was drawn"
    text = text_of(nb)
    assert "batches planned: 0 0" in text  # the sessions exist before the sensors publish
    assert "published 910 messages, 900 distinct readings" in text
    assert "hourly output: 900 rows, 900 distinct; live aggregate: 900 readings" in text
    assert "exactly once: True" in text and "live: nothing_to_do" in text
    assert "spool: 900 messages (offsets 1 to 900)" in text
    grew = [
        int(n) for n in re.findall(r"run \d+: succeeded, \d+ new batches, (\d+) readings", text)
    ]
    assert len(grew) >= 2 and grew == sorted(grew) and grew[-1] == 900, grew
    data = workdir / "streams-data" / "out"
    hours = sorted(p.name for p in (data / "hourly").iterdir() if p.is_dir())
    assert hours == [f"hour=2026-06-01T{h:02d}" for h in range(6, 12)], hours
    frame = pd.read_parquet(data / "hourly")
    assert len(frame) == frame["reading_id"].nunique() == 900
    live = pd.read_parquet(data / "live")
    assert len(live) == 30 and set(live["readings"]) == {30}  # 5 sensors x 6 hours


CHECKS = {
    "01-quickstart.ipynb": check_quickstart,
    "06-monitoring.ipynb": check_monitoring,
    "08-streams.ipynb": check_streams,
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, request, monkeypatch) -> None:
    for service in needs(path):
        assert service in SERVICES, f"{path.name} needs {service!r}; known: {sorted(SERVICES)}"
        fixture, env = SERVICES[service]
        for name, value in env(request.getfixturevalue(fixture)).items():
            monkeypatch.setenv(name, value)  # the kernel inherits it
    workdir = tmp_path / "notebooks"
    nb = execute(path, workdir)
    errors = [out for out in outputs(nb) if out.get("output_type") == "error"]
    assert not errors, errors
    check = CHECKS.get(path.name)
    if check is not None:
        check(nb, workdir)


def test_there_are_notebooks() -> None:
    assert NOTEBOOK_DIR.joinpath("01-quickstart.ipynb") in NOTEBOOKS

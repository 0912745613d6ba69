"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel."""

from __future__ import annotations

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


CHECKS = {"01-quickstart.ipynb": check_quickstart, "06-monitoring.ipynb": check_monitoring}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "notebooks"
    nb = execute(path, workdir)
    errors = [out for out in outputs(nb) if out.get("output_type") == "error"]
    assert not errors, errors
    check = CHECKS.get(path.name)
    if check is not None:
        check(nb, workdir)


def test_there_are_notebooks() -> None:
    assert NOTEBOOK_DIR.joinpath("01-quickstart.ipynb") in NOTEBOOKS

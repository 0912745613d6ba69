"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel.

They run once, while the documentation site is built (conftest.docs_site, which
tests/test_docs.py checks too): each in an empty folder of its own, kept with
the executed notebook, whose outputs are what the site shows.

A notebook that needs a service names it in its metadata (``"dbatch": {"services":
["mqtt"]}``): the build tells the kernel where the service is by an environment
variable, or, when it is absent, shows that notebook as stored and its test skips
with the reason (fails under DBATCH_STRICT_SERVICES=1).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import unavailable

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
pytestmark = [pytest.mark.xdist_group("docs-site"), pytest.mark.timeout(1800)]


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
    assert "image/png" in mimes, "no plot was drawn"
    text = text_of(nb)
    # The progress widget, drawn as it ended: a bar per run, the counts beside it.
    assert text.count('<progress value="7" max="7">') >= 2, "no progress widget was displayed"
    assert "7/7 batches" in text and WIDGET_MIME not in mimes
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
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, docs_site) -> None:
    if path.name in docs_site.not_run:
        unavailable(f"{path.name} {docs_site.not_run[path.name]}")
    executed = docs_site.runs / path.name
    assert executed.exists(), f"the docs build did not execute {path.name}"
    nb = nbformat.read(executed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [out for out in outputs(nb) if out.get("output_type") == "error"]
    assert not errors, errors
    assert outputs(nb), "the notebook shows nothing"
    check = CHECKS.get(path.name)
    if check is not None:
        check(nb, docs_site.runs / path.stem)


@pytest.mark.slow
def test_the_outputs_hold_no_path_of_the_build_machine(docs_site) -> None:
    """Files the notebooks printed read as the relative paths they wrote."""
    here = {str(ROOT), str(docs_site.runs), str(Path.home()), sys.prefix}
    here |= {os.path.realpath(p) for p in here} | {tempfile.gettempdir() + os.sep}
    found = []
    for path in NOTEBOOKS:
        if path.name in docs_site.not_run:
            continue
        nb = nbformat.read(docs_site.runs / path.name, as_version=4)
        shown = json.dumps([outputs(nb), nb.metadata])
        found += [f"{path.name}: {p}" for p in sorted(here) if p in shown]
    assert not found, found
    quickstart = nbformat.read(docs_site.runs / "01-quickstart.ipynb", as_version=4)
    assert "quickstart-data/landing/transactions-2026-11-01-east.csv" in text_of(quickstart)


def test_there_are_notebooks() -> None:
    assert NOTEBOOK_DIR.joinpath("01-quickstart.ipynb") in NOTEBOOKS


def _tiny_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def _app(runs: Path, mode: str = "cache", exclude: tuple[str, ...] = ()):
    from types import SimpleNamespace

    config = SimpleNamespace(
        dbatch_notebook_execution=mode,
        dbatch_notebook_timeout=60,
        dbatch_notebook_runs=str(runs),
        dbatch_notebook_exclude=list(exclude),
    )
    return SimpleNamespace(config=config, outdir=str(runs / "html"))


@pytest.mark.slow
def test_the_build_runs_a_notebook_again_only_when_it_changed(tmp_path) -> None:
    import dbatch_notebooks

    source = _tiny_notebook(
        tmp_path / "tiny.ipynb",
        "from pathlib import Path\nimport time\nprint(Path('data.csv').resolve(), time.time_ns())",
    )
    app = _app(tmp_path / "runs")
    first = nbformat.reads(dbatch_notebooks.prepared(app, source).decode(), as_version=4)
    printed = first.cells[0].outputs[0]["text"]
    assert printed.startswith("data.csv "), printed  # the run folder is taken out
    assert (tmp_path / "runs" / "tiny").is_dir()  # the folder it ran in is kept
    again = nbformat.reads(dbatch_notebooks.prepared(app, source).decode(), as_version=4)
    assert again.cells[0].outputs[0]["text"] == printed  # not run again
    forced = dbatch_notebooks.prepared(_app(tmp_path / "runs", "force"), source).decode()
    assert printed not in forced  # run again: another time
    stored = dbatch_notebooks.prepared(_app(tmp_path / "runs", "off"), source)
    assert stored == source.read_bytes()
    left_out = dbatch_notebooks.prepared(_app(tmp_path / "runs", "force", ("tiny.ipynb",)), source)
    assert left_out == source.read_bytes()
    with pytest.raises(Exception, match="use one of cache, force, off"):
        dbatch_notebooks.prepared(_app(tmp_path / "runs", "always"), source)


@pytest.mark.slow
def test_a_failing_cell_fails_the_build_naming_the_notebook_and_the_cell(tmp_path) -> None:
    import dbatch_notebooks
    from sphinx.errors import ExtensionError

    source = _tiny_notebook(tmp_path / "broken.ipynb", "x = 1", "raise ValueError('no such file')")
    nb = nbformat.read(source, as_version=4)
    nb.metadata["dbatch"] = {"services": ["mqtt"]}
    nbformat.write(nb, source)
    with pytest.raises(ExtensionError) as failed:
        dbatch_notebooks.prepared(_app(tmp_path / "runs"), source)
    message = str(failed.value)
    assert "notebook broken.ipynb failed in code cell 2" in message
    assert "it needs mqtt to answer" in message and "dbatch_notebook_exclude=broken" in message
    assert "ValueError" in message and "no such file" in message
    assert not (tmp_path / "runs" / "broken.ipynb").exists()  # nothing half-done is shown


def test_a_widget_is_shown_as_its_last_state() -> None:
    import dbatch_notebooks

    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_bar", "IPY_MODEL_t"]}},
        "bar": {
            "model_name": "IntProgressModel",
            "state": {"value": 3, "max": 4, "description": "job"},
        },
        "t": {"model_name": "HTMLModel", "state": {"value": "3/4 batches · <b>1</b> failed"}},
    }
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("show()")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output(
            "display_data", data={WIDGET_MIME: {"model_id": "box"}, "text/plain": "HBox(...)"}
        )
    ]
    nb.metadata["widgets"] = {dbatch_notebooks.WIDGET_STATE: {"state": state}}
    dbatch_notebooks.freeze_widgets(nb)
    data = nb.cells[0].outputs[0]["data"]
    assert WIDGET_MIME not in data and "widgets" not in nb.metadata
    assert (
        '<progress value="3" max="4">' in data["text/html"]
        and "<b>1</b> failed" in data["text/html"]
    )
    assert data["text/plain"] == "job 3/4 3/4 batches · 1 failed"

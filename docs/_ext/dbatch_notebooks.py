"""The notebooks of the site, executed while it is built.

Each ``notebooks/*.ipynb`` runs top to bottom in a real Jupyter kernel, in an
empty folder of its own (``<runs>/<name>/``, kept after the run), and the site
shows what it printed, drew and displayed. Before the outputs are rendered:

- paths of the build machine are taken out: the notebook's run folder (its
  files read as the relative paths the notebook wrote), the folder the dbatch
  package is imported from, Python's own folders, the temporary folder and the
  home folder;
- a displayed widget (the progress bar of a run) becomes a static HTML picture
  of its last state, so the page shows it without JavaScript or a kernel.

A notebook whose cell raises fails the build, naming the notebook and the cell.
The executed notebook is kept beside its run folder with a key made from the
notebook and the dbatch sources: a rebuild runs again only what changed. The
options (``conf.py`` or ``sphinx-build -D name=value``):

``dbatch_notebook_execution``
    ``"cache"`` (run when the notebook or dbatch changed), ``"force"`` (always)
    or ``"off"`` (show the notebooks as stored).
``dbatch_notebook_timeout``
    Seconds one cell may take (600).
``dbatch_notebook_runs``
    The folder of the runs; empty: ``notebook-runs`` beside the HTML output.
``dbatch_notebook_exclude``
    Names of notebooks shown as stored, not run (``-D dbatch_notebook_exclude=a.ipynb,b.ipynb``):
    for a build without a service that one of them needs.

A notebook that needs a service names it in its metadata (``"dbatch": {"services":
["mqtt"]}``); a failure of that notebook says so.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

LOG = logging.getLogger(__name__)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MODES = ("cache", "force", "off")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("dbatch_notebook_execution", "cache", "env", types=[str])
    app.add_config_value("dbatch_notebook_timeout", 600, "env", types=[int])
    app.add_config_value("dbatch_notebook_runs", "", "env", types=[str])
    app.add_config_value("dbatch_notebook_exclude", [], "env", types=[list])
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def prepared(app: Sphinx, source: Path) -> bytes:
    """The notebook ``source`` as the site shows it: executed, or as stored (``off``)."""
    mode = app.config.dbatch_notebook_execution
    if mode not in MODES:
        raise ExtensionError(
            f"dbatch_notebook_execution = {mode!r} in conf.py: use one of {', '.join(MODES)}"
        )
    if mode == "off" or source.name in app.config.dbatch_notebook_exclude:
        return source.read_bytes()
    runs = Path(app.config.dbatch_notebook_runs or Path(app.outdir).parent / "notebook-runs")
    runs = runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    executed, key_file = runs / source.name, runs / f"{source.stem}.key"
    key = run_key(source)
    if mode == "cache" and executed.exists() and key_file.exists():
        if key_file.read_text() == key:
            LOG.info("notebook %s: outputs of the last run (nothing changed)", source.name)
            return executed.read_bytes()
    LOG.info("notebook %s: executing", source.name)
    nb = execute(source, runs / source.stem, timeout=app.config.dbatch_notebook_timeout)
    text = nbformat.writes(nb) + "\n"
    executed.write_text(text)
    key_file.write_text(key)
    return text.encode()


def execute(source: Path, workdir: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run ``source`` in a real kernel in the empty folder ``workdir``; outputs cleaned."""
    import nbclient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    nb = nbformat.read(source, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        timeout=timeout,
        startup_timeout=120,
        resources={"metadata": {"path": str(workdir)}},
    )
    log = workdir.with_name(f"{source.stem}.kernel.log")  # what the kernel prints itself
    try:
        with log.open("w") as kernel_err:
            client.execute(stdout=kernel_err, stderr=kernel_err)
    except (CellExecutionError, CellTimeoutError) as e:
        cell = _failed_cell(nb)
        services = nb.metadata.get("dbatch", {}).get("services", [])
        needs = f"; it needs {', '.join(services)} to answer" if services else ""
        raise ExtensionError(
            f"notebook {source.name} failed in code cell {cell} (its files are in {workdir}, "
            f"the kernel's log in {log}{needs}); run it in Jupyter to fix it, or leave it "
            f"out with -D dbatch_notebook_exclude={source.name}:\n{e}"
        ) from None
    freeze_widgets(nb)
    scrub(nb, machine_paths(workdir))
    return nb


def _failed_cell(nb: nbformat.NotebookNode) -> int:
    code = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code, 1):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return number
    ran = [n for n, c in enumerate(code, 1) if c.get("execution_count")]
    return ran[-1] if ran else 1


def run_key(source: Path) -> str:
    """A key of the notebook and of the dbatch package it runs."""
    import dbatch

    digest = hashlib.sha256(source.read_bytes())
    package = Path(dbatch.__file__).parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix not in (".pyc",) and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


# -- paths of the build machine ------------------------------------------------------------


def machine_paths(workdir: Path) -> list[tuple[str, str]]:
    """(prefix, replacement) pairs, the most specific first."""
    import dbatch

    found = [
        (workdir, ""),
        (Path(dbatch.__file__).parent.parent, ""),
    ]
    for name in ("purelib", "platlib"):
        found.append((Path(sysconfig.get_paths()[name]), "site-packages/"))
    found += [
        (Path(sysconfig.get_paths()["stdlib"]), "python/"),
        (Path(sys.prefix), "python/"),
        (Path(tempfile.gettempdir()), "$TMPDIR/"),
        (Path.home(), "~/"),
    ]
    pairs: list[tuple[str, str]] = []
    for path, replacement in found:
        for form in {str(path), os.path.realpath(path)}:
            if len(form) > 1:
                pairs.append((form.rstrip(os.sep) + os.sep, replacement))
    return sorted(set(pairs), key=lambda pair: -len(pair[0]))


def scrub(nb: nbformat.NotebookNode, pairs: list[tuple[str, str]]) -> None:
    """Replace the prefixes of ``pairs`` in every text output (not in images)."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for prefix, replacement in pairs:
                value = value.replace(prefix, replacement)
                value = value.replace(html.escape(prefix), replacement)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for field in ("text", "evalue", "traceback"):
                if field in out:
                    out[field] = clean(out[field])
            data = out.get("data", {})
            for mime in list(data):
                if not mime.startswith("image/") or mime == "image/svg+xml":
                    data[mime] = clean(data[mime])


# -- widgets -----------------------------------------------------------------------------


def freeze_widgets(nb: nbformat.NotebookNode) -> None:
    """Show each displayed widget as static HTML of its last state; drop the widget state."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                continue
            shown = widget_html(view.get("model_id", ""), state)
            out["data"] = {"text/html": f'<div class="dbatch-widget">{shown}</div>'}
            out["data"]["text/plain"] = _plain(shown)


def widget_html(model_id: str, state: dict[str, Any]) -> str:
    """HTML of one widget model and its children, from the stored widget state."""
    model = state.get(model_id.removeprefix("IPY_MODEL_"))
    if model is None:
        return ""
    name, values = model.get("model_name", ""), model.get("state", {})
    label = html.escape(str(values.get("description") or ""))
    if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
        parts = [widget_html(child, state) for child in values.get("children", [])]
        row = name == "HBoxModel"
        style = "display:flex;gap:0.5em;" + (
            "align-items:center" if row else "flex-direction:column;align-items:flex-start"
        )
        return f'<div style="{style}">{"".join(parts)}</div>'
    if name in ("IntProgressModel", "FloatProgressModel"):
        value, top = values.get("value", 0), values.get("max", 100)
        bar = f'<progress value="{value}" max="{top}">{value}/{top}</progress>'
        return f"<span>{label} {bar}</span>" if label else bar
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<div>{values.get('value', '')}</div>"
    if name in ("LabelModel", "TextModel", "TextareaModel"):
        return f"<span>{label} {html.escape(str(values.get('value', '')))}</span>"
    return ""


def _plain(fragment: str) -> str:
    import re

    text = re.sub(r"<progress value=\"(\d+)\" max=\"(\d+)\">[^<]*</progress>", r"\1/\2 ", fragment)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))).strip()

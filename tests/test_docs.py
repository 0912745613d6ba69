"""The documentation site builds without a warning, and its pages and links are all there.

The site is built from a copy of docs/ and notebooks/, with warnings as errors and
nitpicky references (``sphinx-build -W -n -b html``): MyST refuses a link to a page
or heading that does not exist. Then every internal link of the built HTML is
followed offline, to its file and its anchor.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")

from dbatch.registry import entries  # noqa: E402
from dbatch.triggers import SCHEDULES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# One build for this module and tests/test_notebooks.py (conftest.docs_site): the notebooks
# run once. The first test waits for the build, notebooks included.
pytestmark = [pytest.mark.xdist_group("docs-site"), pytest.mark.timeout(1800)]


@pytest.fixture
def site(docs_site) -> Path:
    return docs_site.html


def text_of(page: Path) -> str:
    body = page.read_text()
    body = body[body.find("<article") : body.find("</article>")]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_the_guide_pages_are_built(site):
    for page in (
        "index",
        "getting-started",
        "concepts",
        "job-files",
        "sources-and-sinks",
        "steps",
        "schedules",
        "architecture",
        "changelog",
        "reference/job-file",
        "api/index",
    ):
        assert (site / f"{page}.html").exists(), page
    for page in sorted((ROOT / "docs").glob("*.md")):  # pages added later are in the toctree
        assert (site / f"{page.stem}.html").exists(), page.name


def test_there_is_a_how_to_for_every_source_sink_trigger_and_cluster(site):
    """One page per type, with a job file that uses it."""
    from dbatch.spec import safe_load

    def uses(name: str, job: dict) -> bool:
        kind, _, what = name.partition("-")
        if kind in ("source", "sink"):
            return job.get(kind, {}).get("type") == what
        if kind == "trigger":
            return what in (job.get("schedule") or {})
        scheduler = str((job.get("cluster") or {}).get("scheduler", ""))
        return {
            "local": "workers" in (job.get("cluster") or {}) and not scheduler,
            "scheduler": "://" in scheduler,
            "scheduler-file": scheduler.endswith(".json"),
        }[what]

    own = {
        k: [n for n, e in entries(k).items() if e.target.startswith("dbatch.")]
        for k in ("source", "sink")
    }
    wanted = [f"source-{n}" for n in own["source"]] + [f"sink-{n}" for n in own["sink"]]
    wanted += [f"trigger-{n}" for n in SCHEDULES]
    wanted += ["cluster-local", "cluster-scheduler", "cluster-scheduler-file"]
    index = text_of(site / "how-to" / "index.html")
    for name in wanted:
        source = ROOT / "docs" / "how-to" / f"{name}.md"
        assert (site / "how-to" / f"{name}.html").exists(), f"no how-to page {source.name}"
        blocks = re.findall(r"```yaml\n(.*?)```", source.read_text(), re.S)
        assert any(uses(name, safe_load(b)) for b in blocks), f"{source.name} shows no job using it"
        title = source.read_text().splitlines()[0].lstrip("# ").strip()
        assert title in index, f"{name} is not listed in the how-to index"


def test_the_job_file_reference_is_made_from_the_schema(site):
    from dbatch.jobschema import job_schema

    schema = job_schema(plugins=False)
    text = text_of(site / "reference" / "job-file.html")
    for key in schema["properties"]:
        assert f"{key}" in text
    for name, options in schema["$defs"].items():
        kind, _, type_name = name.partition(".")
        assert type_name in text, name
        for option in options.get("properties", {}):
            assert option in text, f"{name}: option {option!r} is not in the reference"
    assert "glob pattern or fsspec URL" in text  # descriptions from the docstrings


def test_the_notebooks_are_rendered_with_their_executed_outputs(site, docs_site):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):  # notebooks added later too
        page = site / "notebooks" / f"{nb.stem}.html"
        assert page.exists(), nb.name
        if nb.name not in docs_site.not_run:  # (tests/test_notebooks.py names those)
            assert "cell_output" in page.read_text(), f"{nb.name} is shown without outputs"
    page = site / "notebooks" / "01-quickstart.html"
    quickstart = text_of(page)
    assert "connect(" in quickstart  # the code cells ...
    assert "Dask dashboard" in quickstart  # ... the client's repr ...
    assert "dbatch plan" in quickstart and "nothing_to_do" in quickstart  # ... the runs ...
    assert "7/7 batches" in quickstart  # ... the progress bar, as it ended ...
    assert "<progress" in page.read_text() and "jupyter-widgets" not in page.read_text()
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page.read_text())
    assert images and all((page.parent / src).exists() for src in images)  # ... and the plot


def test_the_notebook_pages_hold_no_path_of_the_build_machine(site):
    here = [str(ROOT), os.path.realpath(ROOT), str(Path.home()), sys.prefix, str(site.parent)]
    here.append(tempfile.gettempdir() + os.sep)
    found = []
    for page in sorted((site / "notebooks").glob("*.html")):
        text = page.read_text()
        found += [f"{page.name}: {path}" for path in set(here) if path in text]
    assert not found, found


def test_the_api_reference_renders_the_numpydoc_docstrings(site):
    files = text_of(site / "api" / "generated" / "dbatch.Files.html")
    assert "Parameters" in files and "time_pattern" in files and "Examples" in files
    pipeline = text_of(site / "api" / "generated" / "dbatch.Pipeline.html")
    for method in ("plan", "run", "preview", "check", "explain"):
        assert f"{method} (" in pipeline or f"{method}(" in pipeline, method


def test_the_changelog_covers_the_first_version_to_now(site):
    text = text_of(site / "changelog.html")
    assert "0.1.0" in text and "Unreleased" in text


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"])
        if tag == "a" and found.get("href"):
            self.hrefs.append(found["href"])


def _parsed(page: Path) -> _Links:
    links = _Links()
    links.feed(page.read_text())
    return links


def test_every_internal_link_reaches_its_page_and_anchor(site):
    pages = {p: _parsed(p) for p in site.rglob("*.html")}
    broken = []
    checked = 0
    for page, links in pages.items():
        for href in links.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue  # external: not checked offline
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if target.suffix != ".html":
                if not target.exists():
                    broken.append(f"{page.relative_to(site)}: {href}")
                continue
            checked += 1
            if target not in pages:
                broken.append(f"{page.relative_to(site)}: {href} (no such page)")
            elif parts.fragment and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{page.relative_to(site)}: {href} (no such anchor)")
    assert checked > 200
    assert not broken, broken[:20]

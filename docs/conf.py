"""Sphinx configuration of the dbatch documentation.

Build it with ``sphinx-build -W -b html docs docs/_build/html`` (``pip install
'dbatch[docs]'``). Every notebook of notebooks/ is executed while the site is
built (``dbatch_notebooks``: each in an empty folder of its own, a failing cell
fails the build); a rebuild runs again only the notebooks that changed, or all
of them when dbatch changed.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "dbatch"
author = "the dbatch developers"
copyright = "the dbatch developers"  # noqa: A001 - Sphinx's name
release = _version("dbatch")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "dbatch_docs",
]

# .rst first: autosummary writes its pages in the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_templates", "**.ipynb_checkpoints", "jupyter_execute"]
templates_path = ["_templates"]

# MyST: headings get anchors (job-files.md#errors), ``{eval-rst}`` for autosummary.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]
suppress_warnings = ["myst.header"]  # pages that start at ## under a ### are fine

# Notebooks: dbatch_notebooks executes them (in a folder of their own, with the machine's
# paths taken out of the outputs) before myst-nb reads them; myst-nb itself runs nothing.
nb_execution_mode = "off"
dbatch_notebook_execution = "cache"  # or "force", or "off": shown as stored
dbatch_notebook_timeout = 600  # seconds a cell may take

# API reference: numpydoc docstrings, one page per object.
autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"dbatch {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path: list[str] = []

# The offline link check: internal links and anchors only.
linkcheck_ignore = [r"^https?://", r"^mailto:", r"^tls://", r"^tcp://"]
linkcheck_anchors = True

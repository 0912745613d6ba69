"""Where dbatch shows things to a person: a Jupyter kernel's output, or the terminal's stderr."""

from __future__ import annotations

import html
import sys

__all__ = ["in_notebook", "show_link"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (widgets and HTML show there)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show_link(label: str, url: str) -> None:
    """A link in the notebook's output, or ``label: url`` on stderr."""
    if in_notebook():
        from IPython.display import HTML, display

        safe = html.escape(url)
        display(HTML(f'{html.escape(label)}: <a href="{safe}" target="_blank">{safe}</a>'))
    else:
        print(f"{label}: {url}", file=sys.stderr, flush=True)

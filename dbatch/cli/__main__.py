"""``python -m dbatch.cli``: the dbatch command."""

from . import main

__all__: list[str] = []

main()

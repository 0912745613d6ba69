"""``python -m dbatch``: the dbatch command."""

from .cli import main

__all__: list[str] = []

main(prog_name="dbatch")

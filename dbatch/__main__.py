"""``python -m dbatch``: the dbatch command, as the ``dbatch`` script runs it."""

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main(prog_name="dbatch")

"""``python -m dbatch``: the dbatch command, as the ``dbatch`` script runs it."""

__all__: list[str] = []

if __name__ == "__main__":
    # Imported here, not above: a worker process started from this one imports this
    # module again (as ``__mp_main__``) and needs none of the command line.
    from .cli import script

    script()

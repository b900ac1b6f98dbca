"""``python -m hpsearch``: see :mod:`hpsearch.cli.main`."""

from hpsearch.cli.main import program

if __name__ == "__main__":
    program()

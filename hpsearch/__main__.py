"""``python -m hpsearch``: see :mod:`hpsearch.cli`."""

from hpsearch.cli import program

if __name__ == "__main__":
    program()

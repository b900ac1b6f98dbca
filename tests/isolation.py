"""A Python where hpsearch is not installed, but everything it was installed with is (MLflow, torch, pandas).

Where a published model is loaded, hpsearch may be missing: ``python_without_hpsearch(script)`` is the command
that runs ``script`` there. It starts this interpreter without its site initialisation (``-S``: no ``.pth``
file, so no editable install's finder) and puts this process's own ``sys.path`` in front (a virtual
environment's site-packages or the system's, whichever the tests run in), less every folder that holds the
``hpsearch`` package (this checkout, an editable install's source).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

__all__ = ["python_without_hpsearch"]


def python_without_hpsearch(script: str) -> list[str]:
    """The command that runs ``script`` (Python source) in a Python where hpsearch cannot be imported."""
    kept, dropped = [], []
    for entry in (p for p in sys.path if p and Path(p).is_dir()):
        (dropped if (Path(entry) / "hpsearch" / "__init__.py").is_file() else kept).append(entry)
    installed = [entry for entry in dropped if Path(entry).name in ("site-packages", "dist-packages")]
    if installed:  # its dependencies lie beside it: no path leaves them in and hpsearch out
        pytest.skip(f"hpsearch is installed in {installed[0]}, not from this checkout (pip install -e .)")
    return [sys.executable, "-S", "-c", f"import sys\nsys.path[:0] = {kept!r}\n" + script]

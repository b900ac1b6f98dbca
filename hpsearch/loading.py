"""Heavy imports without the cyclic garbage collector, as CPython's documentation advises for a process that forks.

A search's processes import torch, scikit-learn, pandas, Optuna, MLflow, matplotlib or Ray: hundreds of thousands
of long-lived objects, over which the cyclic collector runs again and again while they load (a full collection
of them costs tenths of a second), and later, at every full collection, for nothing: they live until the process
ends. Measured on a 1-trial search, the driver spent 0.5 s of its 3.1-3.5 s of CPU collecting; with the imports
under :func:`imports_without_gc`, none. ``gc.freeze`` moves what the imports loaded out of the collector's sight
for good, so the processes forked later (the MLflow store, the drawer) do not touch those objects' pages either
(``gc`` module: "call gc.disable() early in the parent process, gc.freeze() right before fork()").

Loading a big table frees many blocks of a few MB (a column at a time, a block of rows at a time); glibc's
``malloc`` keeps such freed memory for later instead of handing it back (its mmap threshold grows as blocks are
freed). :func:`give_back_freed_memory` asks it to hand it back (``malloc_trim``): measured on a table of a million
rows, 164 MB of the search's 1.1 GB after loading. Elsewhere than on glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Iterator

__all__ = ["give_back_freed_memory", "imports_without_gc"]


@contextlib.contextmanager
def imports_without_gc() -> Iterator[None]:
    """Pause the cyclic collector for the imports in the block, then freeze every object alive and resume it."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def give_back_freed_memory() -> None:
    """Hand the memory ``malloc`` holds freed back to the system (glibc's ``malloc_trim``; nothing elsewhere)."""
    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(name).malloc_trim(0)

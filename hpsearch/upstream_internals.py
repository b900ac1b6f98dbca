"""The private internals of other projects that hpsearch still uses, each checked before each use.

The others are gone (issue 18): the command line skips the interpreter's teardown from an exit handler
(``atexit``, ``os._exit``), and a restored Ray Tune search gets today's run configuration through the pickle
protocol of its own class. What remains has no public switch, or a public path measured slower
(``docs/benchmarks.md``, "Private internals: what each one saves"):

- Ray Tune's callback usage tag (:func:`skip_tune_callback_usage_tag`);
- torch's fused Adam, AdamW and SGD ops (:func:`torch_fused_op`), which the public functional API
  (``torch.optim.adam.adam(..., fused=True)``, what :mod:`hpsearch.training.optim` falls back to) wraps in Python that
  costs 20-60 us a step, 3-9 % of a training step at batch 64.

Ray Tune's saved-state files, which :mod:`hpsearch.execution.restore` mends after a kill, are Ray's private format too;
that module asks :func:`ray_is_tested` before it edits one.

Each use checks that the installed release is one the tests ran (:data:`TESTED_RAY`, :data:`TESTED_TORCH`) and
that the private name is still there (with the expected signature, where Python can tell); otherwise the public
path is taken (Ray's own behaviour, torch's public function). ``tests/test_upstream_internals.py`` fails when an
upgrade moves a name, so that the upgrade shows up as a failing test, not as a slower or broken product. Imports
nothing heavy: Ray and torch are imported by the caller.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["TESTED_RAY", "TESTED_TORCH", "ray_is_tested", "skip_tune_callback_usage_tag", "torch_fused_op"]

TESTED_RAY = "2.60"  # the Ray release (major.minor) whose private names and saved-state files were checked
TESTED_TORCH = "2.13"  # the torch release whose fused optimizer ops were checked


def torch_fused_op(optimizer: str) -> Any | None:
    """torch's private fused update op for ``sgd``, ``adam`` or ``adamw`` (``torch._fused_sgd_``, ...), or None
    where the installed torch is not the tested release or lacks it: the caller then uses the public API."""
    import torch

    if ".".join(torch.__version__.split("+")[0].split(".")[:2]) != TESTED_TORCH:
        return None
    return getattr(torch, f"_fused_{optimizer}_", None)


def ray_is_tested() -> bool:
    """Whether the installed Ray is the release whose private names and file formats hpsearch was tested on."""
    import ray

    return ".".join(ray.__version__.split(".")[:2]) == TESTED_RAY


def skip_tune_callback_usage_tag() -> bool:
    """Keep Ray Tune from importing MLflow into the driver when a search starts. Returns whether it did.

    Tune's usage statistics name the kinds of callback a search passes (``ray.air._internal.usage.tag_callbacks``,
    called by ``tune.run`` whatever ``RAY_USAGE_STATS_ENABLED`` says), and to tell its built-in ones apart it
    imports Ray's MLflow, W&B, Comet and Aim integrations: MLflow's import costs the driver 1.2 s of CPU while the
    trial actors start, and memory it keeps. Our one callback is none of those, so the tag is skipped. On another
    Ray release, or if the function moved or changed, nothing is patched: the import simply comes back.
    """
    usage = _tune_usage_module()
    if usage is None:
        return False
    usage.tag_callbacks = _no_callback_tag
    return True


def _no_callback_tag(callbacks: Any) -> bool:
    return False


def _tune_usage_module() -> Any | None:
    """``ray.air._internal.usage`` when it is the one hpsearch was tested with, else None."""
    if not ray_is_tested():
        return None
    try:
        from ray.air._internal import usage
    except ImportError:
        return None
    tag = getattr(usage, "tag_callbacks", None)
    if tag is _no_callback_tag:  # skipped already
        return usage
    if tag is None or list(inspect.signature(tag).parameters) != ["callbacks"]:
        return None
    return usage

"""The one private internal of another project that hpsearch still uses, checked before each use.

Every other private name is gone (issue 18): the optimizers call torch's public functional API, the command
line skips the interpreter's teardown from an exit handler (``atexit``, ``os._exit``), and a restored Ray Tune
search gets today's run configuration through the pickle protocol of its own class. What remains has no public
switch and a measured gain (``docs/benchmarks.md``, "Private internals: what each one saves"):

- Ray Tune's callback usage tag (:func:`skip_tune_callback_usage_tag`).

Ray Tune's saved-state files, which :mod:`hpsearch.ray_state` mends after a kill, are Ray's private format too;
that module asks :func:`ray_is_tested` before it edits one.

Each use checks that the installed release is one the tests ran (:data:`TESTED_RAY`) and that the private name
is still there with the expected signature; when either fails it does nothing, which is the public path (Ray's
own behaviour). ``tests/test_upstream_internals.py`` fails when an upgrade moves a name, so that the upgrade
shows up as a failing test, not as a slower or broken product. Imports nothing heavy: Ray is imported by the
caller.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["TESTED_RAY", "ray_is_tested", "skip_tune_callback_usage_tag"]

TESTED_RAY = "2.60"  # the Ray release (major.minor) whose private names and saved-state files were checked


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

"""The private internals of other projects that hpsearch still uses, each checked before each use.

The others are gone (issue 18): the command line skips the interpreter's teardown from an exit handler
(``atexit``, ``os._exit``), and a restored Ray Tune search gets today's run configuration through the pickle
protocol of its own class. What remains has no public switch, or a public path measured slower
(``docs/benchmarks.md``, "Private internals: what each one saves"):

- Ray Tune's callback usage tag (:func:`skip_tune_callback_usage_tag`);
- torch's fused Adam, AdamW and SGD ops (:func:`torch_fused_op`), which the public functional API
  (``torch.optim.adam.adam(..., fused=True)``, what :mod:`hpsearch.training.optim` falls back to) wraps in Python that
  costs 20-60 us a step, 3-9 % of a training step at batch 64;
- Optuna TPE's log of the normal CDF (:func:`vectorise_tpe_log_ndtr`), which Optuna 5.1 computes one number at a
  time in Python: scipy's ufunc computes the same numbers about 3x faster per proposed trial;
- MLflow's check of a model's pip requirements (:func:`warm_mlflow_requirements_check`), run ahead in the store's
  process so that publishing the best model does not wait for its first, slow run (0.62 -> 0.17 s).

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

__all__ = ["TESTED_MLFLOW", "TESTED_OPTUNA", "TESTED_RAY", "TESTED_TORCH", "ray_is_tested", "release_of",
           "skip_tune_callback_usage_tag", "torch_fused_op", "vectorise_tpe_log_ndtr", "warm_mlflow_requirements_check"]

TESTED_RAY = ("2.60",)  # the Ray releases (major.minor) whose private names and saved-state files were checked
TESTED_TORCH = ("2.13", "2.15")  # the torch releases whose fused optimizer ops were checked
TESTED_OPTUNA = ("5.1",)  # the Optuna releases whose TPE internals were checked
TESTED_MLFLOW = ("3.17", "3.18")  # the MLflow releases whose requirements check was checked


def release_of(version: str) -> str:
    """``major.minor`` of a package's version (``2.13.0+cpu`` -> ``2.13``): what the ``TESTED_*`` tuples list."""
    return ".".join(version.split("+")[0].split(".")[:2])


def torch_fused_op(optimizer: str) -> Any | None:
    """torch's private fused update op for ``sgd``, ``adam`` or ``adamw`` (``torch._fused_sgd_``, ...), or None
    where the installed torch is not a tested release or lacks it: the caller then uses the public API."""
    import torch

    if release_of(torch.__version__) not in TESTED_TORCH:
        return None
    return getattr(torch, f"_fused_{optimizer}_", None)


def ray_is_tested() -> bool:
    """Whether the installed Ray is the release whose private names and file formats hpsearch was tested on."""
    import ray

    return release_of(ray.__version__) in TESTED_RAY


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


def vectorise_tpe_log_ndtr() -> bool:
    """Let Optuna's TPE compute ``log(ndtr(x))`` with scipy's ufunc instead of a Python call per number. Returns
    whether it does.

    TPE's acquisition function needs the Gaussian mass of every kernel's truncated interval for every candidate;
    Optuna 5.1 (``optuna.samplers._tpe._truncnorm._log_ndtr``) maps a Python function over the array
    (``np.frompyfunc``), which made proposing one trial of a 200-trial search cost about 9 ms instead of 3 ms
    (``docs/benchmarks.md``). ``scipy.special.log_ndtr`` is the function Optuna's code was copied from; it is
    checked against Optuna's on a few numbers, tails included, before it replaces it. On another Optuna release,
    without scipy, or if the function moved or answers differently, nothing is replaced.
    """
    truncnorm = _optuna_truncnorm_module()
    if truncnorm is None:
        return False
    if truncnorm._log_ndtr is _scipy_log_ndtr:  # replaced already
        return True
    try:
        import numpy as np
        from scipy.special import log_ndtr  # noqa: F401 - only checks that scipy is there
    except ImportError:
        return False
    probe = np.array([-40.0, -21.0, -5.0, -0.3, 0.0, 0.7, 3.0, 7.0, 30.0])
    if not np.allclose(truncnorm._log_ndtr(probe), _scipy_log_ndtr(probe), rtol=1e-9, atol=1e-300):
        return False
    truncnorm._log_ndtr = _scipy_log_ndtr
    return True


def _scipy_log_ndtr(a: Any) -> Any:
    import numpy as np
    from scipy.special import log_ndtr

    return log_ndtr(np.asarray(a, dtype=float))


def _optuna_truncnorm_module() -> Any | None:
    """``optuna.samplers._tpe._truncnorm`` when it is the one hpsearch was tested with, else None."""
    import optuna

    if release_of(optuna.__version__) not in TESTED_OPTUNA:
        return None
    try:
        from optuna.samplers._tpe import _truncnorm
    except ImportError:
        return None
    return _truncnorm if callable(getattr(_truncnorm, "_log_ndtr", None)) else None


def warm_mlflow_requirements_check(requirements: list[str]) -> bool:
    """Run MLflow's check of a model's pip requirements once, ahead of the first model save; returns whether it ran.

    Saving a model, MLflow checks its requirements against the installed packages
    (``mlflow.utils.requirements_utils.warn_dependency_requirement_mismatches``, not part of MLflow's documented
    API). Its first run in a process maps every installed distribution to its modules, about 0.4 s; the map is
    kept for the process, so later checks cost a few ms. On another MLflow release, or if the function moved or
    takes other parameters, nothing is run and the first save pays for the map itself.
    """
    import mlflow

    if release_of(mlflow.__version__) not in TESTED_MLFLOW:
        return False
    try:
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches as check
    except ImportError:
        return False
    if list(inspect.signature(check).parameters) != ["model_requirements"]:
        return False
    check(requirements)
    return True

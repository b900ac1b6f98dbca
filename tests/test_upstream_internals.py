"""The private internals of Ray, torch, Optuna and MLflow that hpsearch relies on are still where, and what, it expects.

On a tested release (``TESTED_*`` in ``hpsearch/upstream_internals.py``) each test fails when the internal moved.
On a release nobody checked, hpsearch takes the public path (slower, or a resume that can end short): those tests
are skipped with a line that says so, and the last test checks that every internal is then left alone. After an
upgrade, check the internal again, re-measure it (``docs/benchmarks.md``), and add the release to ``TESTED_*``.
"""

import inspect

import mlflow
import optuna
import pytest
import ray
import ray.cloudpickle as cloudpickle
import torch
from ray.tune.execution.tune_controller import TuneController
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from hpsearch.training.optim import FusedOptimizer
from hpsearch.upstream_internals import (
    TESTED_MLFLOW,
    TESTED_OPTUNA,
    TESTED_RAY,
    TESTED_TORCH,
    release_of,
    skip_tune_callback_usage_tag,
    torch_fused_op,
    vectorise_tpe_log_ndtr,
    warm_mlflow_requirements_check,
)


def _tested(package, releases):
    return pytest.mark.skipif(release_of(package.__version__) not in releases,
                              reason=f"{package.__name__} {package.__version__} is not a release whose internals were "
                                     f"checked ({', '.join(releases)}): hpsearch takes the public path")


ray_tested = _tested(ray, TESTED_RAY)


@ray_tested
def test_tune_still_tags_its_callbacks_through_the_function_hpsearch_skips():
    """Tune calls ``ray.air._internal.usage.tag_callbacks(callbacks)`` when a search starts; replaced, Tune no
    longer imports MLflow into the driver (``tests/test_store.py`` checks the driver of a Ray search)."""
    import ray.tune.tune
    from ray.air._internal import usage

    assert "air_usage.tag_callbacks(callbacks)" in inspect.getsource(ray.tune.tune.run)
    assert skip_tune_callback_usage_tag()
    assert usage.tag_callbacks(["any callback"]) is False
    assert skip_tune_callback_usage_tag()  # a second search in the same process


class _Proposer(Searcher):
    def suggest(self, trial_id):
        return {"x": 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass

    def save(self, checkpoint_path):
        with open(checkpoint_path, "wb") as file:
            file.write(b"searcher")


@ray_tested
def test_rays_saved_search_state_has_the_files_and_fields_that_hpsearch_mends_after_a_kill(tmp_path):
    """``hpsearch.execution.restore`` reads and rewrites the searcher's count of trials and the concurrency limiter's
    running trials, in the files Ray names after the session that saved them."""
    limiter = ConcurrencyLimiter(_Proposer(metric="loss", mode="min"), max_concurrent=2)
    generator = SearchGenerator(limiter)
    generator.set_search_properties("loss", "min", {})
    limiter.suggest("t1")

    generator.save_to_dir(str(tmp_path), "2026-01-01_00-00-00")

    assert TuneController.CKPT_FILE_TMPL == "experiment_state-{}.json"
    assert {p.name for p in tmp_path.iterdir()} == {"search_gen_state-2026-01-01_00-00-00.json",
                                                    "searcher-state-2026-01-01_00-00-00.pkl"}
    state = cloudpickle.loads((tmp_path / "search_gen_state-2026-01-01_00-00-00.json").read_bytes())
    assert isinstance(state["counter"], int)
    assert state["name:ConcurrencyLimiter"]["live_trials"] == {"t1"}
    assert state["name:ConcurrencyLimiter"]["num_unfinished_live_trials"] == 1


@_tested(torch, TESTED_TORCH)
def test_the_installed_torch_has_the_fused_ops_that_hpsearch_calls_directly():
    """On the tested torch each trial's optimizer calls them (``tests/test_optim.py`` checks their weights against
    torch.optim's); on another release, or without them, it takes the public functional API."""
    for name in ("sgd", "adam", "adamw"):
        assert torch_fused_op(name) is getattr(torch, f"_fused_{name}_")
        assert FusedOptimizer(name, [torch.zeros(2, requires_grad=True)], lr=0.1, weight_decay=0.0).op is not None


@_tested(optuna, TESTED_OPTUNA)
def test_optuna_tpe_still_computes_log_ndtr_where_hpsearch_vectorises_it():
    """TPE's acquisition calls ``_truncnorm._log_ndtr`` (Optuna 5.1: a Python call per number); hpsearch replaces
    it with scipy's ufunc, which must answer what Optuna's own per-number function answers."""
    import numpy as np
    from optuna.samplers._tpe import _truncnorm

    assert "_log_ndtr(" in inspect.getsource(_truncnorm._log_gauss_mass)
    assert vectorise_tpe_log_ndtr()
    x = np.linspace(-45.0, 45.0, 901)
    optunas_own = np.array([_truncnorm._log_ndtr_single(float(v)) for v in x])
    assert np.allclose(_truncnorm._log_ndtr(x), optunas_own, rtol=1e-6, atol=1e-300)


@_tested(mlflow, TESTED_MLFLOW)
def test_mlflow_still_checks_a_saved_models_requirements_through_the_function_hpsearch_runs_ahead():
    """Saving a pyfunc model, MLflow calls ``warn_dependency_requirement_mismatches(model_requirements)``; hpsearch
    runs it once in the store's process at start-up, so that publishing the best model finds its map built."""
    import mlflow.utils.environment

    assert "warn_dependency_requirement_mismatches(" in inspect.getsource(mlflow.utils.environment)
    assert warm_mlflow_requirements_check([f"mlflow=={mlflow.__version__}"])


def test_on_a_release_nobody_checked_every_internal_is_left_alone(monkeypatch):
    """An upgrade to an unchecked release: no private name is called or replaced; the public path runs."""
    for package in (ray, torch, optuna, mlflow):
        monkeypatch.setattr(package, "__version__", "99.0.0")

    assert skip_tune_callback_usage_tag() is False
    assert torch_fused_op("adam") is None
    assert FusedOptimizer("adam", [torch.zeros(2, requires_grad=True)], lr=0.1, weight_decay=0.0).op is None
    assert vectorise_tpe_log_ndtr() is False
    assert warm_mlflow_requirements_check(["mlflow==99.0.0"]) is False

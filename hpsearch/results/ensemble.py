"""The ensemble a search publishes: greedy selection with replacement from its trials' models (Caruana et al. 2004).

Each candidate (a trial that ended with a model and a value for the search's metric, the best
:data:`MAX_CANDIDATES`) predicts the validation rows as its served model would, from the raw rows: numbers in the
target's units, or class probabilities. Starting from the search's best trial, each step adds the candidate
(again, if it is already in) whose addition makes the average best on the search's metric; after ``steps`` steps
the weights are how often each was added. The shortest prefix of those steps with the best validation score is
kept, so that an ensemble that cannot beat the best trial is the best trial alone.

The validation rows chose the members: the ensemble's validation figures flatter it (as the best trial's flatter
it); its test figures, on rows no trial or selection saw, are the ones to compare.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.data.dataset import Dataset
from hpsearch.tracking.schema import ENSEMBLE_PREFIX, REFIT_PREFIX

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpsearch.tracking.schema import TrialRecord

__all__ = ["MAX_CANDIDATES", "Ensemble", "Holdout", "choose", "greedy_selection", "holdout_of", "record", "score",
           "scores"]

#: The best this many trials are the candidates (a long search's weakest trials cannot add anything).
MAX_CANDIDATES = 25
_EPSILON = 1e-7  # probabilities are clipped to [eps, 1 - eps] in the log loss


@dataclass(frozen=True)
class Holdout:
    """The validation and test rows as a served model reads them (raw rows, or an array of examples) and their
    targets (numbers in the target's units, or class indices): what an ensemble is chosen and tested on."""

    task: str
    classes: list[Any]
    val_inputs: Any
    val_y: np.ndarray
    test_inputs: Any
    test_y: np.ndarray
    target_var: float = 1.0  # the training target's variance: a regression's loss is the MSE over it


@dataclass
class Ensemble:
    """The chosen members (``trial``, ``run_id``, ``model_dir``, ``weight``), best first, and the average's
    ``val_*`` and ``test_*`` metrics."""

    members: list[dict[str, Any]]
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    candidates: int = 0
    refit: bool = False  # its members trained again on training + validation rows (results/refit)

    def describe(self) -> str:
        """``trial_003 x0.48, trial_001 x0.32, ...``"""
        return ", ".join(f"{m['trial']} x{m['weight']:.2f}" for m in self.members)


def holdout_of(data: Dataset) -> Holdout:
    """The search's validation and test rows as its served models read them, and their targets."""
    rows = data.rows
    if rows is None:  # arrays (images): the examples as given; the target from the encoded one
        def target(split: Any) -> np.ndarray:
            if data.task != "regression":
                return split.y.astype(np.int64)
            return split.y.astype(np.float64) * data.target_std + data.target_mean

        return Holdout(data.task, list(data.classes), data.val.X, target(data.val), data.test.X, target(data.test),
                       data.target_std**2)
    plan = getattr(data.preprocessor, "plan", None)
    X = rows.X[plan["inputs"]] if plan else rows.X  # the columns the models read (not an id, say)
    if data.task == "regression":
        y = rows.y.to_numpy(dtype=np.float64)
        return Holdout(data.task, [], X.iloc[rows.val], y[rows.val], X.iloc[rows.test], y[rows.test],
                       float(y[rows.train].var()) or 1.0)
    return Holdout(data.task, list(data.classes), X.iloc[rows.val], data.val.y.astype(np.int64),
                   X.iloc[rows.test], data.test.y.astype(np.int64))


def choose(client: MlflowClient | None, ranked: Sequence[TrialRecord], holdout: Holdout, state: dict[str, Any], *,
           steps: int, metric: str, mode: str) -> Ensemble | None:
    """The ensemble of the search's ``ranked`` trials (best first) by greedy selection on the validation rows.

    ``state`` is the preprocessing the trials' models read raw rows with; ``client`` fetches the model of a trial
    that ended before a resume. None when fewer than two trials have a model.
    """
    candidates = [t for t in ranked if t.model_dir is not None or client is not None][:MAX_CANDIDATES]
    if len(candidates) < 2 or steps < 1:
        return None
    folders = [str(t.model_dir or _download(client, t.run_id)) for t in candidates]
    memos: tuple[dict, dict] = ({}, {})  # the validation and test rows' features, worked out once for every trial
    val, test = zip(*(_outputs(folder, state, holdout, memos) for folder in folders), strict=True)
    key = metric.removeprefix("val_")
    objective = _objective(key, mode, holdout, holdout.val_y)
    counts = greedy_selection(val, objective, steps, first=0)  # from the search's best trial
    chosen = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    weights = counts / counts.sum()
    members = [{"trial": candidates[i].name, "run_id": candidates[i].run_id, "model_dir": folders[i],
                "weight": float(weights[i])} for i in chosen]
    average = lambda outputs: sum(weights[i] * outputs[i] for i in chosen)  # noqa: E731
    metrics = {**{f"val_{k}": v for k, v in scores(average(val), holdout.val_y, holdout).items()},
               **{f"test_{k}": v for k, v in scores(average(test), holdout.test_y, holdout).items()}}
    return Ensemble(members, metrics, int(counts.sum()), len(candidates))


def greedy_selection(outputs: Sequence[np.ndarray], objective: Callable[[np.ndarray], Any], steps: int, *,
                     first: int | None = None) -> np.ndarray:
    """How often each candidate is picked: ``steps`` greedy picks with replacement (lower ``objective`` is
    better), the first one ``first`` when given, cut back to the shortest prefix with the best objective."""
    counts = np.zeros(len(outputs), dtype=np.int64)
    total = np.zeros_like(outputs[0], dtype=np.float64)
    picks, best, best_at = [], None, 0
    for step in range(1, steps + 1):
        values = [objective((total + candidate) / step) for candidate in outputs]
        pick = first if step == 1 and first is not None else min(range(len(outputs)), key=lambda i: values[i])
        picks.append(pick)
        total += outputs[pick]
        if best is None or values[pick] < best:
            best, best_at = values[pick], step
    for pick in picks[:best_at]:
        counts[pick] += 1
    return counts


def scores(outputs: np.ndarray, y: np.ndarray, holdout: Holdout) -> dict[str, float]:
    """The metrics a trial reports, for predictions in the target's units or class probabilities: ``rmse``,
    ``mae`` and ``loss`` (the MSE over the training target's variance, as a trial's loss), or ``accuracy`` and
    ``loss`` (the log loss)."""
    if holdout.task == "regression":
        error = outputs - y
        mse = float(np.mean(error**2))
        return {"loss": mse / holdout.target_var, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(error)))}
    picked = np.clip(outputs[np.arange(len(y)), y], _EPSILON, 1 - _EPSILON)
    return {"loss": float(-np.mean(np.log(picked))), "accuracy": float(np.mean(outputs.argmax(axis=1) == y))}


# ------------------------------------------------------------------------------------------------ helpers
def _objective(key: str, mode: str, holdout: Holdout, y: np.ndarray) -> Callable[[np.ndarray], Any]:
    """Lower is better: the search's metric (its sign by ``mode``), ties broken by the loss (accuracy ties often)."""
    sign = 1.0 if mode == "min" else -1.0

    def objective(outputs: np.ndarray) -> tuple[float, float]:
        figures = scores(outputs, y, holdout)
        return sign * figures[key], figures["loss"]

    return objective


def _outputs(model_dir: str, state: dict[str, Any], holdout: Holdout,
             memos: tuple[dict, dict]) -> tuple[np.ndarray, np.ndarray]:
    """What a trial's model predicts for the validation and the test rows, as its served model would: numbers,
    or class probabilities. ``memos`` keep the features of each (:func:`hpsearch.model.pyfunc.predict_frame`)."""
    from hpsearch.model.network import load_model
    from hpsearch.model.pyfunc import predict_rows

    model, spec = load_model(model_dir)

    def outputs(inputs: Any, memo: dict) -> np.ndarray:
        frame = predict_rows(model, spec, state, inputs, memo)
        if holdout.task == "regression":
            return frame["prediction"].to_numpy(dtype=np.float64)
        return frame[[f"probability_{c}" for c in holdout.classes]].to_numpy(dtype=np.float64)

    return outputs(holdout.val_inputs, memos[0]), outputs(holdout.test_inputs, memos[1])


def _download(client: MlflowClient | None, run_id: str) -> str:
    """A trial's model files from MLflow (a trial that ended before a resume has no local checkpoint)."""
    from hpsearch.tracking.tracker import download_model

    return download_model(client, run_id, Path(tempfile.mkdtemp(prefix="hpsearch-member-")))


def score(client: MlflowClient | None, members: list[dict[str, Any]], holdout: Holdout,
          state: dict[str, Any]) -> Ensemble:
    """The weighted average of these ``members`` (``model_dir`` and ``weight`` each: a refit ensemble) tested on
    the test rows (its validation figures would mean nothing: its models trained on those rows)."""
    memos: tuple[dict, dict] = ({}, {})
    test = [_outputs(member["model_dir"], state, holdout, memos)[1] for member in members]
    average = sum(member["weight"] * outputs for member, outputs in zip(members, test, strict=True))
    return Ensemble(members, {f"test_{k}": v for k, v in scores(average, holdout.test_y, holdout).items()},
                    refit=True)


def record(client: MlflowClient, run_id: str, ensemble: Ensemble) -> None:
    """The ensemble on the search's parent run: ``ensemble_val_*``, ``ensemble_test_*``, ``ensemble_size`` (its
    distinct members) and ``ensemble.json`` (each member's trial, run and weight); a refit one as ``refit_*`` and
    ``refit.json`` (with each member's epochs)."""
    import json
    import time

    from mlflow.entities import Metric

    prefix = REFIT_PREFIX if ensemble.refit else ENSEMBLE_PREFIX
    now = int(time.time() * 1000)
    metrics = {f"{prefix}{k}": v for k, v in ensemble.metrics.items()}
    metrics[f"{prefix}size"] = len(ensemble.members)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    members = [{k: m[k] for k in ("trial", "run_id", "weight", "epochs") if k in m} for m in ensemble.members]
    client.log_text(run_id, json.dumps({"members": members, "steps": ensemble.steps, "candidates": ensemble.candidates,
                                        "metrics": ensemble.metrics}, indent=2), f"{prefix.rstrip('_')}.json")

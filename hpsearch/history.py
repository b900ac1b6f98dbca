"""A finished search read back from MLflow: the parent run's settings and every trial's params and curves.

The plots and the report are built from what the tracking store holds, not from the runner's memory, so that
``hpsearch report`` draws the same figures for a search run last week, on another machine, as the runner drew
at its end. Read-only: :mod:`hpsearch.tracking` writes the runs; this module only reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the history's classes load without MLflow (MLflow loads only where a client is opened)
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["SearchHistory", "TrialHistory", "load_search"]

CURVE_METRICS = ("train_loss", "val_loss", "val_accuracy", "val_rmse", "val_mae")


@dataclass
class TrialHistory:
    """One trial (child run): its params as MLflow stores them (strings) and its metric per epoch."""

    name: str
    run_id: str
    status: str
    params: dict[str, str]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    start_ms: int = 0
    end_ms: int | None = None

    def last(self, metric: str) -> float | None:
        """The metric at the trial's last epoch: the value the searcher and the ranking saw."""
        points = self.curves.get(metric)
        return points[-1][1] if points else None

    @property
    def epochs(self) -> int:
        return max((len(points) for points in self.curves.values()), default=0)


@dataclass
class SearchHistory:
    """One search: the parent run's params and tags, and its trials in the order they started."""

    experiment: str
    parent_run_id: str
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    trials: list[TrialHistory]
    start_ms: int = 0

    @property
    def metric(self) -> str:
        return self.params.get("metric", "val_loss")

    @property
    def mode(self) -> str:
        return self.params.get("mode", "min")

    @property
    def task(self) -> str:
        return self.params.get("task", "multiclass")

    def space(self) -> dict[str, str]:
        """The space file's params as it wrote them (``{"lr": "loguniform(0.0001, 0.1)", ...}``)."""
        return {k.removeprefix("space."): v for k, v in self.params.items() if k.startswith("space.")}

    def scored(self) -> list[TrialHistory]:
        """Trials with a value for the search's metric (completed or stopped), in start order."""
        return [t for t in self.trials if t.last(self.metric) is not None and t.status != "failed"]

    def ranked(self) -> list[TrialHistory]:
        """Scored trials, best first."""
        return sorted(self.scored(), key=lambda t: t.last(self.metric), reverse=self.mode == "max")


def load_search(client: MlflowClient, parent_run_id: str) -> SearchHistory:
    """Read a search's parent run and all its child runs, with their metric histories."""
    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                  max_results=10_000)
    trials = sorted((_trial(client, run) for run in children), key=lambda t: (t.name, t.start_ms))
    return SearchHistory(
        experiment=experiment.name,
        parent_run_id=parent_run_id,
        run_name=parent.info.run_name or parent_run_id,
        params=dict(parent.data.params),
        tags=dict(parent.data.tags),
        metrics=dict(parent.data.metrics),
        trials=trials,
        start_ms=parent.info.start_time or 0,
    )


def _trial(client: MlflowClient, run: Run) -> TrialHistory:
    tags = run.data.tags
    curves = {}
    for key in CURVE_METRICS:
        if key in run.data.metrics:
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
            curves[key] = list({m.step: m.value for m in history}.items())  # a repeated step keeps its last value
    return TrialHistory(
        name=run.info.run_name or tags.get("hpsearch.trial_id", run.info.run_id),
        run_id=run.info.run_id,
        status=tags.get("hpsearch.status", "unknown"),
        params=dict(run.data.params),
        curves=curves,
        start_ms=run.info.start_time or 0,
        end_ms=run.info.end_time,
    )

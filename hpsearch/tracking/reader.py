"""The one reader of MLflow: a search found, its settings and its trials read back as :class:`TrialRecord`.

``best``, ``export``, the figures, the report and a resume read searches through here, so there is one way to
find a search and one ranking (:func:`hpsearch.tracking.schema.rank`). The plots and the report are built from what the
tracking store holds, not from the runner's memory, so that ``hpsearch report`` draws the same figures for a
search run last week, on another machine, as the runner drew at its end. Read-only: :mod:`hpsearch.tracking.tracker`
writes the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import NotFoundError, TrackingError
from hpsearch.tracking.connection import check_store_exists, connect
from hpsearch.tracking.schema import (
    EPOCHS_TRAINED,
    KIND_SEARCH,
    METRIC_KEYS,
    MLFLOW_PARENT_RUN_ID,
    SPACE_PREFIX,
    TAG_ERROR,
    TAG_KIND,
    TAG_SPACE_FILE,
    TAG_STATUS,
    TAG_TRIAL_ID,
    Status,
    TrialRecord,
    rank,
)

if TYPE_CHECKING:  # the history's classes load without MLflow (MLflow loads only where a client is opened)
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["SearchHistory", "child_runs", "find_search", "latest_space_file", "load_search", "read_trials"]


@dataclass
class SearchHistory:
    """One search: the parent run's params and tags, and its trials in the order they started."""

    experiment: str
    parent_run_id: str
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    trials: list[TrialRecord]
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
        """The parent run's ``space.*`` params: Optuna's distribution JSON, or a fixed value as text."""
        return {k.removeprefix(SPACE_PREFIX): v for k, v in self.params.items() if k.startswith(SPACE_PREFIX)}

    def ranked(self) -> list[TrialRecord]:
        """Completed and stopped trials with a value for the search's metric, best first."""
        return rank(self.trials, self.metric, self.mode)

    def scored(self) -> list[TrialRecord]:
        """The ranked trials in the order they started."""
        ranked = {id(t) for t in self.ranked()}
        return [t for t in self.trials if id(t) in ranked]


def find_search(client: MlflowClient, experiment: str | None = None, search_run_id: str | None = None) -> Run:
    """The parent run of ``--search RUN_ID``, or the latest search of ``experiment`` (of any, when None)."""
    if search_run_id is not None:
        try:
            run = client.get_run(search_run_id)
        except Exception:  # noqa: BLE001 - MLflow raises different errors per store for an unknown id
            raise NotFoundError(f"no run {search_run_id!r} in the tracking store") from None
        if run.data.tags.get(TAG_KIND) != KIND_SEARCH:
            raise NotFoundError(f"run {search_run_id!r} is not an hpsearch search (a parent run)")
        return run
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in client.search_experiments() if e.name != "Default"]
            raise NotFoundError(f"no experiment {experiment!r} in the tracking store; it has: "
                                f"{', '.join(map(repr, names)) or 'none'}")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs = latest_searches(client, ids, 1) if ids else []
    if not runs:
        where = f"experiment {experiment!r}" if experiment else "the tracking store"
        raise NotFoundError(f"{where} has no hpsearch search; run `python -m hpsearch run SPACE_FILE` first")
    return runs[0]


def latest_searches(client: MlflowClient, experiment_ids: list[str], max_results: int) -> list[Run]:
    """The newest parent runs of these experiments, newest first."""
    return client.search_runs(experiment_ids, f"tags.`{TAG_KIND}` = '{KIND_SEARCH}'", max_results=max_results,
                              order_by=["attributes.start_time DESC"])


def load_search(client: MlflowClient, parent_run_id: str) -> SearchHistory:
    """Read a search's parent run and all its child runs, with their metric histories."""
    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    trials = read_trials(client, parent.info.experiment_id, parent_run_id, curves=True)
    return SearchHistory(
        experiment=experiment.name,
        parent_run_id=parent_run_id,
        run_name=parent.info.run_name or parent_run_id,
        params=dict(parent.data.params),
        tags=dict(parent.data.tags),
        metrics=dict(parent.data.metrics),
        trials=sorted(trials, key=lambda t: (t.name, t.start_ms)),
        start_ms=parent.info.start_time or 0,
    )


def read_trials(client: MlflowClient, experiment_id: str, parent_run_id: str, *,
                curves: bool = False) -> list[TrialRecord]:
    """The search's trials as records, oldest first; with ``curves``, every metric per epoch too (a call per
    metric and trial: the figures need them, ``best`` and ``export`` do not)."""
    return [_record(client, run, curves) for run in child_runs(client, experiment_id, parent_run_id)]


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """The trials' runs of one search, oldest first."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                              max_results=10_000, order_by=["attributes.start_time ASC"])


def _record(client: MlflowClient, run: Run, curves: bool) -> TrialRecord:
    tags, metrics = run.data.tags, run.data.metrics
    record = TrialRecord(
        trial_id=tags.get(TAG_TRIAL_ID, run.info.run_id),
        run_id=run.info.run_id,
        name=run.info.run_name or tags.get(TAG_TRIAL_ID, run.info.run_id),
        params=dict(run.data.params),
        status=tags.get(TAG_STATUS, Status.RUNNING),
        metrics=dict(metrics),
        error=tags.get(TAG_ERROR),
        start_ms=run.info.start_time or 0,
        end_ms=run.info.end_time,
    )
    if curves:
        record.curves = {key: _curve(client, run.info.run_id, key) for key in METRIC_KEYS if key in metrics}
    trained = metrics.get(EPOCHS_TRAINED)  # a trial killed before its end was written has none
    record.epochs = int(trained if trained is not None else _last_step(client, run.info.run_id, record.curves))
    return record


def _curve(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return list({m.step: m.value for m in history}.items())  # a repeated step keeps its last value


def _last_step(client: MlflowClient, run_id: str, curves: dict[str, Any]) -> int:
    """Epochs of a trial killed before its end was written: its last reported epoch."""
    if "val_loss" in curves:
        return max((step for step, _ in curves["val_loss"]), default=0)
    return max((m.step for m in client.get_metric_history(run_id, "val_loss")), default=0)


def latest_space_file(tracking_uri: str | None, experiment: str) -> Path:
    """The space file the latest search of ``experiment`` was started from (for ``hpsearch resume``).

    Refuses, before any data is loaded and without writing anything, where there is nothing to resume: no store
    here, no search in the experiment, or a latest search that finished.
    """
    shown = check_store_exists(tracking_uri)
    client, _ = connect(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = latest_searches(client, [found.experiment_id], 1) if found else []
    if not runs:
        raise TrackingError(f"experiment {experiment!r} has no search to resume in {shown}")
    run = runs[0]
    if run.info.status == "FINISHED":
        raise TrackingError(f"the latest search of experiment {experiment!r} ({run.info.run_id}) finished: nothing "
                            f"to resume; a new search: python -m hpsearch run {run.data.tags[TAG_SPACE_FILE]}")
    return Path(run.data.tags[TAG_SPACE_FILE])

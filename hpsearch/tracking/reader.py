"""The one reader of MLflow: a search found, its settings and its trials read back as :class:`TrialRecord`.

``best``, ``export``, the figures, the report and a resume read searches through here, so there is one way to
find a search and one ranking (:func:`hpsearch.tracking.schema.rank`). The plots and the report are built from what the
tracking store holds, not from the runner's memory, so that ``hpsearch report`` draws the same figures for a
search run last week, on another machine, as the runner drew at its end. Read-only: :mod:`hpsearch.tracking.tracker`
writes the runs.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import NotFoundError, TrackingError, nearest_name
from hpsearch.tracking.connection import check_store_exists, connect
from hpsearch.tracking.lease import latest_session, refuse_if_held
from hpsearch.tracking.schema import (
    EPOCHS_TRAINED,
    KIND_SEARCH,
    METRIC_KEYS,
    MLFLOW_PARENT_RUN_ID,
    SPACE_PREFIX,
    TAG_ERROR,
    TAG_KIND,
    TAG_RAY_EXPERIMENT,
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

__all__ = ["ResumableSearch", "SearchHistory", "child_runs", "find_resumable_search", "find_search", "load_search",
           "read_trials", "resumable_search", "search_trials"]


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
            raise NotFoundError(f"no experiment {experiment!r} in the tracking store"
                                f"{_did_you_mean(client, experiment)}")
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


def load_search(client: MlflowClient, parent_run_id: str,
                curves: dict[str, dict[str, list[tuple[int, float]]]] | None = None) -> SearchHistory:
    """Read a search's parent run and all its child runs, with their metric histories.

    ``curves``: the histories the caller already has (run id -> metric -> ``(epoch, value)``, what it wrote),
    not read again: a call per run and metric, seconds for a search of a thousand trials.
    """
    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    trials = read_trials(client, parent.info.experiment_id, parent_run_id, curves=True, known=curves)
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


def read_trials(client: MlflowClient, experiment_id: str, parent_run_id: str, *, curves: bool = False,
                known: dict[str, dict[str, list[tuple[int, float]]]] | None = None) -> list[TrialRecord]:
    """The search's trials as records, oldest first; with ``curves``, every metric per epoch too (a call per
    metric and trial, except for the runs in ``known``: the figures need them, ``best`` and ``export`` do not)."""
    return [_record(client, run, curves, (known or {}).get(run.info.run_id))
            for run in child_runs(client, experiment_id, parent_run_id)]


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """The trials' runs of one search, oldest first."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                              max_results=10_000, order_by=["attributes.start_time ASC"])


def _record(client: MlflowClient, run: Run, curves: bool,
            known: dict[str, list[tuple[int, float]]] | None = None) -> TrialRecord:
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
        record.curves = {key: list(known[key]) if known and key in known else _curve(client, run.info.run_id, key)
                         for key in METRIC_KEYS if key in metrics}
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


def _did_you_mean(client: MlflowClient, experiment: str) -> str:
    """``; did you mean 'churn'? (it has: 'churn', 'digits')`` for an unknown experiment name."""
    names = [e.name for e in client.search_experiments() if e.name != "Default"]
    guess = nearest_name(experiment, names)
    return (f"; did you mean {guess!r}?" if guess else "") + f" (it has: {', '.join(map(repr, names)) or 'none'})"


@dataclass(frozen=True)
class ResumableSearch:
    """A search that can be continued: its parent run, Ray Tune's folder for it, its settings, and what its
    latest session was asked for; ``session`` is set once this process has claimed it
    (:mod:`~hpsearch.tracking.lease`)."""

    run_id: str
    ray_experiment: str
    params: dict[str, str]
    tags: dict[str, str]
    asked: dict[str, Any]
    finished: bool
    trials: int
    session: int = 0

    @property
    def executor(self) -> str:
        return self.params.get("executor", "ray")

    @property
    def space_file(self) -> Path:
        return Path(self.tags[TAG_SPACE_FILE])


def find_resumable_search(client: MlflowClient, experiment_id: str | None, experiment: str, *,
                          num_samples: int | None = None, more: bool = False,
                          claimant: int | None = None) -> ResumableSearch:
    """The latest search of the experiment, checked to be one this process may continue; read-only.

    An interrupted search continues; a finished one only with ``more`` (more trials, or a time budget). Refused
    (:class:`TrackingError`, one line) where there is no search, where it finished and nothing more is asked,
    where ``num_samples`` is fewer than the trials it has, and where another process runs it
    (:class:`~hpsearch.tracking.lease.SearchHeld`).
    """
    runs = latest_searches(client, [experiment_id], 1) if experiment_id is not None else []
    if not runs:
        raise TrackingError(f"experiment {experiment!r} has no search to resume; run it without --resume")
    run = runs[0]
    run_id, params, tags = run.info.run_id, dict(run.data.params), dict(run.data.tags)
    trials = len(child_runs(client, experiment_id, run_id))
    finished = run.info.status == "FINISHED"
    store = f" --tracking-uri {shlex.quote(client.tracking_uri)}" if _named_store(client.tracking_uri) else ""
    again = f"python -m hpsearch resume {shlex.quote(experiment)}{store}"
    if finished and not more:
        raise TrackingError(f"the latest search of experiment {experiment!r} ({run_id}) finished (trials: {trials}): "
                            f"nothing to resume; more trials: {again} --num-samples {2 * max(trials, 1)}; "
                            f"a new search: python -m hpsearch run {shlex.quote(tags.get(TAG_SPACE_FILE, 'SPACE'))}")
    if num_samples is not None and (num_samples < trials or (finished and num_samples == trials)):
        fewest = trials + 1 if finished else trials
        raise TrackingError(f"--num-samples {num_samples} is fewer than the search {run_id} has (trials: {trials}); "
                            f"ask for {fewest} or more, e.g. {again} --num-samples {max(2 * trials, fewest)}")
    refuse_if_held(params, tags, f"search {run_id} of experiment {experiment!r}", claimant)
    latest = latest_session(params)
    return ResumableSearch(run_id, tags.get(TAG_RAY_EXPERIMENT, ""), params, tags, latest.asked if latest else {},
                           finished, trials)


def search_trials(client: MlflowClient, experiment_or_run: str) -> tuple[str, str, list[TrialRecord]]:
    """The trials of a search named by its parent run's id, or of the latest search of an experiment: its run
    id, its experiment's name, and its trials (a warm start's source)."""
    try:
        run = client.get_run(experiment_or_run)
    except Exception:  # noqa: BLE001 - MLflow raises different errors per store for an unknown id
        run = None
    if run is None or run.data.tags.get(TAG_KIND) != KIND_SEARCH:
        run = find_search(client, experiment=experiment_or_run)
    experiment = client.get_experiment(run.info.experiment_id).name
    return run.info.run_id, experiment, read_trials(client, run.info.experiment_id, run.info.run_id)


def resumable_search(tracking_uri: str | None, experiment: str, *, num_samples: int | None = None,
                     more: bool = False) -> ResumableSearch:
    """:func:`find_resumable_search` for ``hpsearch resume``, before any data is loaded or Ray started: refuses
    without writing anything (no store is created where none is)."""
    shown = check_store_exists(tracking_uri)
    client, _ = connect(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:  # a name that may be mistyped: the nearest one
        raise TrackingError(f"experiment {experiment!r} has no search to resume in {shown}"
                            f"{_did_you_mean(client, experiment)}")
    return find_resumable_search(client, found.experiment_id, experiment, num_samples=num_samples, more=more)


def _named_store(tracking_uri: str) -> bool:
    """Whether a command must name the store (``--tracking-uri``): not for the default ``./mlruns``."""
    from hpsearch.tracking.connection import default_tracking_uri

    return tracking_uri.split("?")[0] not in (default_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))

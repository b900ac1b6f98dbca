"""What a search writes to MLflow: its parent run and one child run per trial (:class:`TrialTracker`).

All writes come from the driver, so trials need no access to the tracking store and the trial -> run mapping
lives in one place (:class:`TrialTracker`). Per-epoch metrics are buffered and written with ``log_batch`` about
once a second instead of one call per metric; a trial's params ride with its first batch (a call less per trial:
MLflow's client time per trial 34.8 -> 21.5 ms, ``docs/benchmarks.md``).

The functions that take a ``client`` run next to the MLflow client, through
:meth:`hpsearch.tracking.store.Store.call` (in the driver, or in the store's own process), and return plain
values. This module loads MLflow only inside them, so the driver that imports it never loads MLflow.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import TrackingError
from hpsearch.model.network import model_files as saved_model_files
from hpsearch.tracking.reader import child_runs, latest_searches, read_trials
from hpsearch.tracking.schema import (
    ENDED,
    EPOCHS_TRAINED,
    KIND_SEARCH,
    KIND_TRIAL,
    LOSS_KEYS,
    METRIC_KEYS,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NAME,
    TAG_BEST_RUN_ID,
    TAG_BEST_TRIAL,
    TAG_ERROR,
    TAG_KIND,
    TAG_NODE,
    TAG_NODE_ID,
    TAG_NODE_IP,
    TAG_RAY_EXPERIMENT,
    TAG_SPACE_FILE,
    TAG_STATUS,
    TAG_STOP_REASON,
    TAG_TRIAL_ID,
    TAG_WARNING_PREFIX,
    Status,
    TrialRecord,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpsearch.tracking.store import Pending, Store

__all__ = ["TrialRecord", "TrialTracker"]

FLUSH_INTERVAL_S = 1.0



class TrialTracker:
    """One MLflow child run per trial under the search's parent run.

    Args:
        store: where the MLflow client is (:mod:`hpsearch.tracking.store`).
        experiment_id: where the runs go.
        parent_run_id: the search's parent run.
        max_epochs: to tell a completed trial from one that was stopped early.
    """

    def __init__(self, store: Store, experiment_id: str, parent_run_id: str, max_epochs: int) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.max_epochs = max_epochs
        self.records: dict[str, TrialRecord] = {}
        self._pending: dict[str, list[tuple[str, float, int, int]]] = {}  # trial id -> (key, value, time ms, step)
        self._pending_tags: dict[str, dict[str, str]] = {}  # trial id -> tags
        self._pending_params: dict[str, dict[str, str]] = {}  # trial id -> params not yet written
        self._last_flush = time.monotonic()
        self._opening: dict[str, Pending] = {}  # trial id -> its run's id, on its way from the store
        self.on_ended: Callable[[TrialRecord], None] | None = None  # called once per trial, after its run is closed

    def __getstate__(self) -> dict[str, Any]:
        """Ray Tune pickles its callbacks (and this tracker) into its snapshot: the store and the hook stay here."""
        return {**self.__dict__, "on_ended": None, "store": None, "_opening": {}}

    def record(self, trial_id: str) -> TrialRecord:
        """The trial's record, with its run id once the store has answered (the first time, it may wait for it)."""
        record = self.records[trial_id]
        opening = self._opening.get(trial_id)
        if opening is not None:
            record.run_id = opening.result()
            del self._opening[trial_id]  # only once answered: a Ctrl-C in the wait leaves it to be read again
        return record

    @classmethod
    def resume(cls, store: Store, experiment_id: str, parent_run_id: str, max_epochs: int) -> TrialTracker:
        """A tracker that knows the child runs an interrupted search already has, so trials find their run again."""
        tracker = cls(store, experiment_id, parent_run_id, max_epochs)
        for record in store.call(trial_records, experiment_id, parent_run_id):
            tracker.records[record.trial_id] = record
        return tracker

    def forget(self, trial_ids: set[str]) -> int:
        """Delete the runs of trials that Ray Tune's saved state never knew (opened just before a kill)."""
        orphans = [r for r in self.records.values() if r.trial_id in trial_ids]
        if orphans:
            self.store.call(_delete_runs, [record.run_id for record in orphans])
        for record in orphans:
            del self.records[record.trial_id]
        return len(orphans)

    def trial_started(self, trial_id: str, params: dict[str, Any]) -> TrialRecord:
        """Open the trial's child run; its full effective configuration goes as params with its first metrics.

        The driver does not wait for the run: its id is read when the trial's first metrics are written (at most
        once a second, :meth:`flush`) or when it ends (:meth:`record`), by when the store has long answered.
        Until then the record's ``run_id`` is empty (a store in this process answers at once).
        """
        if trial_id in self.records:  # a trial that resumes keeps its run
            record = self.record(trial_id)
            if record.status == Status.RUNNING:
                # A kill between the run's creation and its params left it without them: logged now.
                missing = {} if record.params else {k: str(v) for k, v in params.items()}
                record.params = record.params or params
                self.store.send(_reopen_run, record.run_id, missing)
            return record
        name = f"trial_{len(self.records):03d}"
        opening = self.store.submit(_open_trial_run, self.experiment_id, self.parent_run_id, name, trial_id)
        record = self.records[trial_id] = TrialRecord(trial_id, "", name, params)
        self._pending_params[trial_id] = {k: str(v) for k, v in params.items()}
        if opening.done():
            record.run_id = opening.result()
        else:
            self._opening[trial_id] = opening
        return record

    def epoch_reported(self, trial_id: str, metrics: dict[str, Any], *, ended_ms: int | None = None) -> None:
        """Buffer one epoch's metrics (``step=epoch``); written at most once a second.

        ``ended_ms``: when the epoch ended (Unix ms), for an epoch reported later than that, so that MLflow's
        time axes show when each epoch was trained; by default, now.
        """
        record = self.records[trial_id]
        epoch = int(metrics["epoch"])
        if epoch <= record.epochs or record.status != Status.RUNNING:  # a repeated or already recorded epoch
            return
        record.epochs = epoch
        values = {k: float(v) for k, v in metrics.items() if _is_metric(k, v)}
        record.metrics = values
        for key in LOSS_KEYS:
            if key in values:
                record.curves.setdefault(key, []).append((epoch, values[key]))
        at = int(time.time() * 1000) if ended_ms is None else int(ended_ms)
        self._pending.setdefault(trial_id, []).extend((k, v, at, epoch) for k, v in values.items())
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def node_reported(self, trial_id: str, node_id: str, *, hostname: str, node_ip: str) -> None:
        """Tag the trial's run with the node it runs on, once: ``hpsearch.node`` = ``HOSTNAME/NODE_ID[:8]``.

        Two Ray nodes on one machine share hostname and IP, so Ray's node id (from the trial) tells them apart.
        """
        record = self.records[trial_id]
        if record.node is not None or not node_id:
            return
        record.node = f"{hostname}/{node_id[:8]}"
        tags = {TAG_NODE: record.node, TAG_NODE_ID: node_id, TAG_NODE_IP: node_ip}
        # Written with the trial's next metrics (one log_batch, not two): a call less per trial.
        self._pending_tags.setdefault(trial_id, {}).update(tags)

    def trial_ended(self, trial_id: str, *, model_dir: str | None = None, error: str | None = None,
                    early_stopped: bool = False) -> TrialRecord:
        """Tag the trial completed / stopped / failed, attach its model, and close its run (once).

        Its last metrics, ``epochs_trained`` and its tags go in one ``log_batch`` after the model files, so a
        run tagged completed always has its model. The driver does not wait for the writing (Ray Tune's loop
        starts the next trial meanwhile); calls made after this one find the run closed.
        """
        record = self.record(trial_id)
        if record.status in ENDED:
            return record
        tags: dict[str, str] = {}
        if error is not None:
            record.status, record.error = Status.FAILED, error
            tags[TAG_ERROR] = _first_line(error)[:4000]
        elif record.epochs >= self.max_epochs:
            record.status = Status.COMPLETED
        else:
            record.status = Status.STOPPED
            tags[TAG_STOP_REASON] = "early_stopping" if early_stopped else "scheduler"
        model_files = []
        if model_dir is not None and error is None:
            record.model_dir = model_dir
            model_files = [str(path) for path in saved_model_files(model_dir)]
        tags[TAG_STATUS] = record.status
        metrics = [*self._pending.pop(trial_id, []), (EPOCHS_TRAINED, record.epochs, int(time.time() * 1000), 0)]
        tags = {**self._pending_tags.pop(trial_id, {}), **tags}
        self.store.send(_close_trial_run, record.run_id, error=error, model_files=model_files, metrics=metrics,
                        tags=tags, params=self._pending_params.pop(trial_id, {}))
        if self.on_ended is not None:
            self.on_ended(record)
        return record

    def flush(self) -> None:
        for trial_id in {*self._pending, *self._pending_tags}:
            self.store.send(_log_batch, self.record(trial_id).run_id, self._pending.get(trial_id, []),
                            self._pending_tags.get(trial_id, {}), self._pending_params.pop(trial_id, {}))
        self._pending.clear()
        self._pending_tags.clear()
        self._last_flush = time.monotonic()

    def close_open_runs(self, status: str = "KILLED") -> None:
        """Never leave a child run RUNNING: mark the runs of trials that did not end (with their params)."""
        for trial_id in self._pending_params:
            self._pending.setdefault(trial_id, [])
        self.flush()
        epochs = {}
        for record in map(self.record, list(self.records)):
            if record.status == Status.RUNNING:
                record.status = Status.KILLED
                epochs[record.run_id] = record.epochs
        self.store.call(_kill_open_runs, self.experiment_id, self.parent_run_id, epochs, status)


# ------------------------------------------------------------------ run next to the client (Store.call)
def _open_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, name: str, trial_id: str) -> str:
    """Create a trial's child run with its tags; returns its id."""
    run = client.create_run(experiment_id, run_name=name,
                            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: name, TAG_TRIAL_ID: trial_id,
                                  TAG_STATUS: Status.RUNNING, TAG_KIND: KIND_TRIAL})
    return run.info.run_id


def _reopen_run(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(TAG_STATUS, Status.RUNNING)])


def _log_batch(client: MlflowClient, run_id: str, metrics: list[tuple[str, float, int, int]],
               tags: dict[str, str], params: dict[str, str] | None = None) -> None:
    """Metrics as ``(key, value, time ms, step)``, tags and params, within MLflow's limits per ``log_batch``
    (100 params, 100 tags, 1000 entities in all): the params and tags in the first batches."""
    from mlflow.entities import Metric, Param, RunTag

    entries = [Metric(*metric) for metric in metrics]
    run_tags = [RunTag(k, v) for k, v in tags.items()]
    items = [Param(k, v) for k, v in (params or {}).items()]
    while True:  # at least one call: a close with nothing pending still writes its batch
        head_params, items = items[:100], items[100:]
        head_tags, run_tags = run_tags[:100], run_tags[100:]
        room = 1000 - len(head_params) - len(head_tags)
        head_metrics, entries = entries[:room], entries[room:]
        client.log_batch(run_id, metrics=head_metrics, params=head_params, tags=head_tags)
        if not (entries or items or run_tags):
            return


def _close_trial_run(client: MlflowClient, run_id: str, *, error: str | None, model_files: list[str],
                     metrics: list[tuple[str, float, int, int]], tags: dict[str, str],
                     params: dict[str, str] | None = None) -> None:
    """The trial's error or model files, then its last metrics, tags (and params, if not written yet), then its
    end: in this order."""
    if error is not None:
        client.log_text(run_id, error, "error.txt")
    for path in model_files:
        client.log_artifact(run_id, path, "model")
    _log_batch(client, run_id, metrics, tags, params)
    client.set_terminated(run_id, "FAILED" if error is not None else "FINISHED")


def _delete_runs(client: MlflowClient, run_ids: list[str]) -> None:
    for run_id in run_ids:
        client.delete_run(run_id)


def _kill_open_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, epochs: dict[str, int],
                    status: str) -> None:
    """Close the search's child runs still RUNNING, with the epochs they trained (when the tracker knew them)."""
    for run_id, trained in epochs.items():
        client.log_metric(run_id, EPOCHS_TRAINED, trained)
    # Also runs that an interruption caught between their creation and their record.
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, TAG_STATUS, Status.KILLED)
            client.set_terminated(run.info.run_id, status)


def trial_records(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """The trials an interrupted search already has, as records; those that did not end are running again.

    A kill between a trial's last batch (which tags it ended, after its model files) and the end of its run left
    the run RUNNING with everything else written: the run is ended here, as the close would have ended it.
    """
    records = []
    for record in read_trials(client, experiment_id, parent_run_id):
        if record.end_ms is None and record.status in ENDED:  # its run still RUNNING
            client.set_terminated(record.run_id, "FAILED" if record.status == Status.FAILED else "FINISHED")
        record.metrics = {k: v for k, v in record.metrics.items() if k in METRIC_KEYS}
        if record.status not in ENDED:
            record.status = Status.RUNNING  # killed or left RUNNING: Ray Tune resumes it from its checkpoint
        records.append(record)
    return records


@dataclass(frozen=True)
class ResumableSearch:
    """An interrupted search, reopened: its parent run, Ray Tune's folder for it, and the settings it started with."""

    run_id: str
    ray_experiment: str
    params: dict[str, str]


def find_resumable_search(client: MlflowClient, experiment_id: str, experiment: str) -> ResumableSearch:
    """The latest search of the experiment, if it did not finish; reopened (RUNNING) to be continued."""
    runs = latest_searches(client, [experiment_id], 1)
    if not runs:
        raise TrackingError(f"experiment {experiment!r} has no search to resume; run it without --resume")
    run = runs[0]
    if run.info.status == "FINISHED":
        raise TrackingError(f"the latest search of experiment {experiment!r} ({run.info.run_id}) finished; "
                            "nothing to resume: run it without --resume to start a new search")
    client.update_run(run.info.run_id, status="RUNNING")
    return ResumableSearch(run.info.run_id, run.data.tags[TAG_RAY_EXPERIMENT], dict(run.data.params))


def start_search_run(client: MlflowClient, experiment_id: str, name: str, params: dict[str, Any],
                     space_file: Path, ray_experiment: str, columns: dict[str, Any] | None = None) -> str:
    """Open the search's parent run with its settings as params and the space file as an artifact.

    ``columns`` (what was done to the data's rows and columns) is logged as ``columns.json``.
    """
    from mlflow.entities import Param, RunTag

    tags = {MLFLOW_RUN_NAME: name, TAG_SPACE_FILE: str(space_file.resolve()), TAG_RAY_EXPERIMENT: ray_experiment}
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow's limit per log_batch
        # The kind tag comes with the first params (the settings a resume reads): a search killed in between
        # is never taken for a resumable one without them.
        kind = [RunTag(TAG_KIND, KIND_SEARCH)] if start == 0 else []
        client.log_batch(run_id, params=items[start : start + 100], tags=kind)
    client.log_artifact(run_id, str(space_file), "space")
    if columns is not None:
        client.log_text(run_id, json.dumps(columns, indent=2, default=str), "columns.json")
    return run_id


def finish_search_run(client: MlflowClient, run_id: str, summary: dict[str, Any], best: TrialRecord | None,
                      test_metrics: dict[str, float], metric: str) -> None:
    """Record the outcome on the parent run (counts, best trial's config and metrics) and close it."""
    from mlflow.entities import Metric

    metrics = {f"trials_{k}": v for k, v in summary.items()}
    if best is not None:
        metrics[f"best_{metric}"] = best.metrics[metric]
        metrics.update({f"best_{k}": v for k, v in test_metrics.items()})
        client.set_tag(run_id, TAG_BEST_TRIAL, best.name)
        client.set_tag(run_id, TAG_BEST_RUN_ID, best.run_id)
        client.log_text(run_id, json.dumps({"trial": best.name, "run_id": best.run_id, "params": best.params,
                                            "metrics": {**best.metrics, **test_metrics}}, indent=2, default=str),
                        "best_config.json")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")


def log_test_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])


def abort_search_run(client: MlflowClient, run_id: str, error_text: str, *, killed: bool) -> None:
    """After an interruption or a crash (the trials' runs closed first): the error, if any, and the parent run's end."""
    if error_text:
        client.log_text(run_id, error_text, "error.txt")
    client.set_terminated(run_id, "KILLED" if killed else "FAILED")


def record_warnings(client: MlflowClient, run_id: str, warnings: dict[str, str], tracebacks: dict[str, str]) -> None:
    """What failed after the trials: a tag ``hpsearch.warning.STEP`` each, the traceback in ``warnings/``."""
    for step, message in warnings.items():
        client.set_tag(run_id, f"{TAG_WARNING_PREFIX}{step}", message[:5000])
        client.log_text(run_id, tracebacks.get(step, message), f"warnings/{step}.txt")


def log_files(client: MlflowClient, files: list[tuple[str, str, str]]) -> None:
    """Log ``(run id, local file or folder, artifact folder)`` triples: a folder's content goes in that folder."""
    for run_id, path, artifact_path in files:
        if Path(path).is_dir():
            client.log_artifacts(run_id, path, artifact_path)
        else:
            client.log_artifact(run_id, path, artifact_path)


def _is_metric(key: str, value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return key in METRIC_KEYS and number and math.isfinite(value)


def download_model(client: MlflowClient, run_id: str, directory: Path) -> str:
    """The trial's model files from MLflow (when Ray's checkpoint is not at hand, as after a resume)."""
    directory.mkdir(parents=True, exist_ok=True)
    return client.download_artifacts(run_id, "model", str(directory))


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


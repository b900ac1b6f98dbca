"""What a search writes to MLflow: its parent run and one child run per trial (:class:`TrialTracker`).

All writes come from the driver, so trials need no access to the tracking store and the trial -> run mapping
lives in one place (:class:`TrialTracker`). A trial's run costs MLflow as few calls as its data allow: the run's
creation, its model files, one ``log_batch`` with its metrics, params and tags, and its end. Per-epoch metrics are
buffered: a trial that lasts more than a second has them written about once a second (so the MLflow UI follows
it), a shorter one in its closing batch only. The driver never waits for a trial's run id while the trials run:
writes sent before the store has answered name the run by its trial (``_RUN_IDS``, where the client is).

The functions that take a ``client`` run next to the MLflow client, through
:meth:`hpsearch.tracking.store.Store.call` (in the driver, or in the store's own process), and return plain
values. This module loads MLflow only inside them, so the driver that imports it never loads MLflow.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.model.network import model_files as saved_model_files
from hpsearch.tracking import lease
from hpsearch.tracking.reader import child_runs
from hpsearch.tracking.resumed import find_resumable_search, trial_number, trial_records
from hpsearch.tracking.schema import (
    BEST_EPOCH,
    BEST_KEYS,
    BEST_PREFIX,
    ENDED,
    EPOCHS_TRAINED,
    KIND_SEARCH,
    KIND_TRIAL,
    METRIC_KEYS,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NAME,
    TAG_BEST_RUN_ID,
    TAG_BEST_TRIAL,
    TAG_END_REASON,
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

__all__ = ["TrialRecord", "TrialTracker", "find_resumable_search"]

FLUSH_INTERVAL_S = 1.0  # the longest a trial's reported epoch waits before it is written

#: Where the client is (the store's process, or this one): the id of each run opened by :func:`_open_trial_run`,
#: by ``(parent run id, trial id)``, for the writes that the driver sent before it had the id back.
_RUN_IDS: dict[tuple[str, str], str] = {}



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
        self._written: dict[str, float] = {}  # trial id -> when its metrics were last written (monotonic)
        self._opening: dict[str, Pending] = {}  # trial id -> its run's id, on its way from the store
        self._next_number = 0  # the number in the next trial's name (trial_008 follows trial_007)
        self._free_names: list[str] = []  # names of deleted runs (see forget): the next trials take them first

    def __getstate__(self) -> dict[str, Any]:
        """Ray Tune pickles its callbacks (and this tracker) into its snapshot: the store stays here."""
        return {**self.__dict__, "store": None, "_opening": {}}

    def record(self, trial_id: str) -> TrialRecord:
        """The trial's record, with its run id once the store has answered (the first time, it may wait for it)."""
        record = self.records[trial_id]
        opening = self._opening.get(trial_id)
        if opening is not None:
            record.run_id = opening.result()
            del self._opening[trial_id]  # only once answered: a Ctrl-C in the wait leaves it to be read again
        return record

    def finish(self) -> list[TrialRecord]:
        """Write what is buffered and wait for every run id: the trials' records once the trials have ended."""
        self.flush()
        return [self.record(trial_id) for trial_id in list(self.records)]

    def curves(self) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """Run id -> metrics per epoch, of the trials whose every epoch this tracker wrote (not resumed ones)."""
        return {record.run_id: record.curves for record in self.records.values()
                if record.run_id and record.epochs and
                [step for step, _ in record.curves.get("val_loss", ())] == list(range(1, record.epochs + 1))}

    def _run(self, trial_id: str) -> str | tuple[str, str]:
        """How a write names the trial's run: its id, or, until the store has answered, the trial (no wait)."""
        record = self.records[trial_id]
        opening = self._opening.get(trial_id)
        if opening is not None and opening.done():
            record.run_id = opening.result()
            del self._opening[trial_id]
        return record.run_id or (self.parent_run_id, trial_id)

    @classmethod
    def resume(cls, store: Store, experiment_id: str, parent_run_id: str, max_epochs: int) -> TrialTracker:
        """A tracker that knows the child runs an interrupted search already has, so trials find their run again."""
        tracker = cls(store, experiment_id, parent_run_id, max_epochs)
        for record in store.call(trial_records, experiment_id, parent_run_id):
            tracker.records[record.trial_id] = record
            tracker._next_number = max(tracker._next_number, trial_number(record.name) + 1)
        return tracker

    def unused_id(self, prefix: str) -> str:
        """A trial id no trial of this search has (``local_00008``), for an executor that names its trials."""
        number = len(self.records)
        while f"{prefix}_{number:05d}" in self.records:
            number += 1
        return f"{prefix}_{number:05d}"

    def forget(self, trial_ids: set[str]) -> int:
        """Delete the runs of trials that Ray Tune's saved state never knew (opened just before a kill); the next
        new trials take their names, so that the names stay ``trial_000`` to the last, without a gap."""
        orphans = [r for r in self.records.values() if r.trial_id in trial_ids]
        self._free_names = sorted([*self._free_names, *(r.name for r in orphans)])
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
        if self._free_names:
            name = self._free_names.pop(0)
        else:
            name, self._next_number = f"trial_{self._next_number:03d}", self._next_number + 1
        opening = self.store.submit(_open_trial_run, self.experiment_id, self.parent_run_id, name, trial_id)
        record = self.records[trial_id] = TrialRecord(trial_id, "", name, params)
        self._pending_params[trial_id] = {k: str(v) for k, v in params.items()}
        self._written[trial_id] = time.monotonic()
        if opening.done():
            record.run_id = opening.result()
        else:
            self._opening[trial_id] = opening
        return record

    def epoch_reported(self, trial_id: str, metrics: dict[str, Any], *, ended_ms: int | None = None) -> None:
        """Buffer one epoch's metrics (``step=epoch``); written once a second of the trial, or when it ends.

        ``ended_ms``: when the epoch ended (Unix ms), for an epoch reported later than that, so that MLflow's
        time axes show when each epoch was trained; by default, now.
        """
        record = self.records[trial_id]
        epoch = int(metrics["epoch"])
        if epoch <= record.epochs or record.status != Status.RUNNING:  # a repeated or already recorded epoch
            return
        record.epochs = epoch
        values = {k: float(v) for k, v in metrics.items() if _is_metric(k, v)}
        for key, value in values.items():
            record.curves.setdefault(key, []).append((epoch, value))
        if int(metrics.get(BEST_EPOCH, epoch)) == epoch:  # the trial's model is now this epoch's
            values.update({BEST_EPOCH: epoch, **{BEST_PREFIX + k: v for k, v in values.items()}})
        record.metrics = {**{k: v for k, v in record.metrics.items() if k in BEST_KEYS}, **values}
        at = int(time.time() * 1000) if ended_ms is None else int(ended_ms)
        self._pending.setdefault(trial_id, []).extend((k, v, at, epoch) for k, v in values.items())
        if time.monotonic() - self._written.get(trial_id, 0.0) >= FLUSH_INTERVAL_S:
            self._flush(trial_id)

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
                    early_stopped: bool = False, stop_reason: str | None = None) -> TrialRecord:
        """Tag the trial completed / stopped / failed, attach its model, and close its run (once).

        ``stop_reason``: why a trial that did not train ``max_epochs`` stopped, when the search's end stopped
        it (``time budget``, ``patience``, ``goal``); by default early stopping's or the scheduler's.

        Its last metrics, ``epochs_trained`` and its tags go in one ``log_batch`` after the model files, so a
        run tagged completed always has its model. The driver waits neither for the writing (Ray Tune's loop
        starts the next trial meanwhile) nor for the run's id; calls made after this one find the run closed.
        """
        record = self.records[trial_id]
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
            tags[TAG_STOP_REASON] = stop_reason or ("early_stopping" if early_stopped else "scheduler")
        model_files = []
        if model_dir is not None and error is None:
            record.model_dir = model_dir
            model_files = [str(path) for path in saved_model_files(model_dir)]
        tags[TAG_STATUS] = record.status
        metrics = [*self._pending.pop(trial_id, []), (EPOCHS_TRAINED, record.epochs, int(time.time() * 1000), 0)]
        tags = {**self._pending_tags.pop(trial_id, {}), **tags}
        self.store.send(_close_trial_run, self._run(trial_id), error=error, model_files=model_files,
                        metrics=metrics, tags=tags, params=self._pending_params.pop(trial_id, {}))
        self._written.pop(trial_id, None)
        return record

    def flush(self) -> None:
        """Write every trial's buffered metrics and tags now."""
        for trial_id in {*self._pending, *self._pending_tags}:
            self._flush(trial_id)

    def _flush(self, trial_id: str) -> None:
        self.store.send(_log_batch, self._run(trial_id), self._pending.pop(trial_id, []),
                        self._pending_tags.pop(trial_id, {}), self._pending_params.pop(trial_id, {}))
        self._written[trial_id] = time.monotonic()

    def close_open_runs(self, status: str = "KILLED") -> dict[str, str]:
        """Never leave a child run RUNNING: mark the runs of trials that did not end (with their params).

        Returns each trial's status as MLflow holds it once they are closed (name -> ``completed``, ``killed``,
        ...). A trial whose end could not be written (the store failed under it) is KILLED there, and here too.
        """
        for trial_id in self._pending_params:
            self._pending.setdefault(trial_id, [])
        self.flush()
        epochs = {}
        for record in map(self.record, list(self.records)):
            if record.status == Status.RUNNING:
                record.status = Status.KILLED
                epochs[record.run_id] = record.epochs
        held = self.store.call(_kill_open_runs, self.experiment_id, self.parent_run_id, epochs, status)
        for record in self.records.values():
            if held.get(record.name) == Status.KILLED:
                record.status = Status.KILLED
        return held


# ------------------------------------------------------------------ run next to the client (Store.call)
def _open_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, name: str, trial_id: str) -> str:
    """Create a trial's child run with its tags; returns its id (also kept here, for :func:`_run_id`)."""
    run = client.create_run(experiment_id, run_name=name,
                            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: name, TAG_TRIAL_ID: trial_id,
                                  TAG_STATUS: Status.RUNNING, TAG_KIND: KIND_TRIAL})
    _RUN_IDS[(parent_run_id, trial_id)] = run.info.run_id
    return run.info.run_id


def _run_id(run: str | tuple[str, str]) -> str:
    """A run named by its id, or by ``(parent run id, trial id)`` when the driver sent the write before it had
    the id (the run was opened by an earlier call: calls run in order)."""
    return run if isinstance(run, str) else _RUN_IDS[tuple(run)]


def _reopen_run(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(TAG_STATUS, Status.RUNNING)])


def _log_batch(client: MlflowClient, run: str | tuple[str, str], metrics: list[tuple[str, float, int, int]],
               tags: dict[str, str], params: dict[str, str] | None = None) -> None:
    """Metrics as ``(key, value, time ms, step)``, tags and params, within MLflow's limits per ``log_batch``
    (100 params, 100 tags, 1000 entities in all): the params and tags in the first batches."""
    from mlflow.entities import Metric, Param, RunTag

    run_id = _run_id(run)
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


def _close_trial_run(client: MlflowClient, run: str | tuple[str, str], *, error: str | None, model_files: list[str],
                     metrics: list[tuple[str, float, int, int]], tags: dict[str, str],
                     params: dict[str, str] | None = None) -> None:
    """The trial's error or model files, then its last metrics, tags (and params, if not written yet), then its
    end: in this order."""
    run_id = _run_id(run)
    if isinstance(run, tuple):
        del _RUN_IDS[tuple(run)]  # the run's last write
    if error is not None:
        with contextlib.suppress(Exception):  # a full disk: the run still ends failed, its error's last line in a tag
            client.log_text(run_id, error, "error.txt")
    for path in model_files:
        client.log_artifact(run_id, path, "model")
    _log_batch(client, run_id, metrics, tags, params)
    client.set_terminated(run_id, "FAILED" if error is not None else "FINISHED")


def _delete_runs(client: MlflowClient, run_ids: list[str]) -> None:
    for run_id in run_ids:
        client.delete_run(run_id)


def _kill_open_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, epochs: dict[str, int],
                    status: str) -> dict[str, str]:
    """Close the search's child runs still RUNNING, with the epochs they trained (when the tracker knew them).

    Returns each child run's status tag as MLflow then holds it (run name -> ``completed``, ``killed``, ...).
    """
    for run_id, trained in epochs.items():
        client.log_metric(run_id, EPOCHS_TRAINED, trained)
    held = {}
    # Also runs that an interruption caught between their creation and their record, and runs whose end failed.
    for run in child_runs(client, experiment_id, parent_run_id):
        name, tagged = run.info.run_name, run.data.tags.get(TAG_STATUS, Status.RUNNING)
        if run.info.status == "RUNNING" and tagged in ENDED:  # everything written but its end
            client.set_terminated(run.info.run_id, "FAILED" if tagged == Status.FAILED else "FINISHED")
        elif run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, TAG_STATUS, Status.KILLED)
            client.set_terminated(run.info.run_id, status)
            tagged = Status.KILLED
        held[name] = str(tagged)
    return held


def start_search_run(client: MlflowClient, experiment_id: str, name: str, params: dict[str, Any],
                     space_file: Path, ray_experiment: str, columns: dict[str, Any] | None = None,
                     holder: dict[str, Any] | None = None) -> str:
    """Open the search's parent run with its settings as params and the space file as an artifact.

    ``columns`` (what was done to the data's rows and columns) is logged as ``columns.json``; ``holder``
    (:func:`hpsearch.tracking.lease.me`) claims the search's first session for this process.
    """
    from mlflow.entities import Param, RunTag

    tags = {MLFLOW_RUN_NAME: name, TAG_SPACE_FILE: str(space_file.resolve()), TAG_RAY_EXPERIMENT: ray_experiment}
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    # The search's first session (this process) comes with its settings: no other process can claim it first.
    session = {f"{lease.SESSION_PREFIX}1": json.dumps(holder)} if holder is not None else {}
    items = [Param(k, str(v)[:6000]) for k, v in {**params, **session}.items()]
    for start in range(0, len(items), 100):  # MLflow's limit per log_batch
        # The kind tag comes with the first params (the settings a resume reads): a search killed in between
        # is never taken for a resumable one without them.
        kind = [RunTag(TAG_KIND, KIND_SEARCH)] if start == 0 else []
        client.log_batch(run_id, params=items[start : start + 100], tags=kind)
    client.log_artifact(run_id, str(space_file), "space")
    if columns is not None:
        client.log_text(run_id, json.dumps(columns, indent=2, default=str), "columns.json")
    if holder is not None:
        lease.hold(client, run_id, 1)
    return run_id


def finish_search_run(client: MlflowClient, run_id: str, summary: dict[str, Any], best: TrialRecord | None,
                      test_metrics: dict[str, float], metric: str, *, session: int = 0, end_reason: str = "trials",
                      ended: dict[str, float] | None = None) -> None:
    """Record the outcome on the parent run (counts, best trial's config and metrics, why the search ended and
    ``ended``'s figures, such as the time budget used), close it and release this session's lease."""
    from mlflow.entities import Metric

    metrics = {f"trials_{k}": v for k, v in summary.items()} | (ended or {})
    client.set_tag(run_id, TAG_END_REASON, end_reason)
    if best is not None:
        metrics[f"best_{metric}"] = best.value(metric)
        metrics.update({f"best_{k}": v for k, v in test_metrics.items()})
        client.set_tag(run_id, TAG_BEST_TRIAL, best.name)
        client.set_tag(run_id, TAG_BEST_RUN_ID, best.run_id)
        client.log_text(run_id, json.dumps({"trial": best.name, "run_id": best.run_id, "params": best.params,
                                            "metrics": {**best.metrics, **test_metrics}}, indent=2, default=str),
                        "best_config.json")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")
    if session:
        lease.release(client, run_id, session)


def log_test_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])


def abort_search_run(client: MlflowClient, run_id: str, error_text: str, *, killed: bool, session: int = 0) -> None:
    """After an interruption or a crash (the trials' runs closed first): the error, if any, and the parent run's end
    (also when the error cannot be written, as on a full disk), and this session's lease released."""
    with contextlib.suppress(Exception):  # the user sees the error; its copy may fail for the same reason
        if error_text:
            client.log_text(run_id, error_text, "error.txt")
        client.set_tag(run_id, TAG_END_REASON, "interrupted" if killed else "error")
    client.set_terminated(run_id, "KILLED" if killed else "FAILED")
    if session:
        lease.release(client, run_id, session)


def written(client: MlflowClient) -> None:
    """Nothing: its answer comes once every call sent before it has run (an earlier failure is raised first)."""


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



"""The Ray Tune executor: trials as Ray Tune trials (ASHA, checkpoints, resume, clusters), tracked from the driver.

Optuna proposes configurations through Ray's ``OptunaSearch`` with our define-by-run space (conditional layer
sizes); every trial runs :func:`hpsearch.training.fit.fit` (through :func:`hpsearch.execution.trainable.ray_trial`);
a Tune callback in the driver hands each event to the :class:`~hpsearch.tracking.tracker.TrialTracker` and the
progress display. Ray loads only for a search that runs on it (about 1.5 s of imports the other executors save).
"""

from __future__ import annotations

import atexit
import errno
import functools
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

# Ray Tune's own CSV / JSON / TensorBoard loggers duplicate what MLflow records: off, before ray.tune loads.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C raises KeyboardInterrupt at once: Tune's own handler would stop the running trials as if they had ended,
# and their runs would be closed as finished. A resumed trial goes on from its last checkpoint.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
# A search stopped by a failure (a full disk) reports it in one line; the trials still running when it stopped
# fail too, and Ray would log each of their errors again as it exits.
os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")

from hpsearch import upstream_internals  # noqa: E402
from hpsearch.cluster import checks  # noqa: E402
from hpsearch.data.dataset import Dataset  # noqa: E402
from hpsearch.errors import MachineError, SpaceError  # noqa: E402
from hpsearch.execution import ray_ending as ray_end  # noqa: E402
from hpsearch.execution import restore as ray_state  # noqa: E402
from hpsearch.execution import shipping  # noqa: E402
from hpsearch.execution.progress import Progress  # noqa: E402
from hpsearch.execution.sampling import STUDY_NAME, make_study, train_settings  # noqa: E402
from hpsearch.execution.stopping import Ending  # noqa: E402
from hpsearch.execution.trainable import ENDED_MS_KEY, NODE_ID_KEY, decision_epochs, epochs_of, ray_trial  # noqa: E402
from hpsearch.loading import imports_without_gc  # noqa: E402
from hpsearch.space import Search, suggest_params  # noqa: E402
from hpsearch.tracking import resumed  # noqa: E402
from hpsearch.tracking import tracker as tracking  # noqa: E402
from hpsearch.tracking.schema import ENDED, Status, TrialRecord  # noqa: E402
from hpsearch.training.fit import TrialConfig  # noqa: E402

__all__ = ["end_ray_in_background", "end_ray_within", "fit_on_ray", "nodes", "parallel_slots", "ray_running",
           "start_ray", "tracking_callback"]

# Ray Tune loads only for a search that runs on it (about 1.5 s of imports the in-process executor saves).
ray = tune = ExperimentAnalysis = ASHAScheduler = OptunaSearch = None


def import_ray() -> None:
    global ray, tune, ExperimentAnalysis, ASHAScheduler, OptunaSearch
    if tune is None:
        with imports_without_gc():
            import ray
            from ray import tune
            from ray.tune import ExperimentAnalysis
            from ray.tune.schedulers import ASHAScheduler
            from ray.tune.search.optuna import OptunaSearch

        upstream_internals.skip_tune_callback_usage_tag()


def ray_running() -> bool:
    """Whether this process already runs Ray (a library caller, the tests): without importing Ray."""
    loaded = sys.modules.get("ray")
    return loaded is not None and loaded.is_initialized()


def start_ray(resources: dict[str, float], address: str | None = None) -> bool:
    """Start a local Ray, connect to the cluster at ``address``, or reuse the Ray this process already has;
    then check it can hold one trial. Returns whether this call started or connected it (the search then ends
    it, see :func:`end_ray_in_background`)."""
    import_ray()
    ours = not ray.is_initialized()
    on_term = signal.getsignal(signal.SIGTERM)
    if ours and address is not None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=True)
        except Exception as err:  # noqa: BLE001 - unreachable, or refused (token authentication)
            raise checks.connection_error(address, err) from None
    elif ours:
        # No prestarted workers: Ray starts one per CPU for the driver, but Tune's trial actors carry a runtime
        # env of their own and get new workers, and the prestarted ones (1 s of CPU on 2 cores) are killed unused.
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True,
                 _system_config={"prestart_worker_first_driver": False})
    if ours and callable(on_term):  # Ray's driver installs its own (a stack dump, an abort): this process's is back
        signal.signal(signal.SIGTERM, on_term)
    available = ray.cluster_resources()
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        if resources[key] > available.get(ray_key, 0):
            raise SpaceError(f"asks for {resources[key]:g} {key.upper()}s per trial, but the Ray cluster has "
                             f"{available.get(ray_key, 0):g}", field=f"resources.{key}")
    return ours


def end_ray_in_background() -> threading.Thread:
    """Shut Ray down while the search's end (test report, best model, figures) runs: none of it needs Ray.

    ``ray.shutdown`` stops a local Ray's processes one after the other, giving each up to a second to exit
    (about 1.2 s here, spent waiting, not computing), and at the interpreter's exit it first sleeps 0.5 s for
    workers' logs, which this search does not forward. The thread is joined before the search returns.
    """
    thread = threading.Thread(target=ray.shutdown, name="hpsearch-ray-shutdown")
    thread.start()
    return thread


def end_ray_within(seconds: float) -> None:
    """Shut the Ray this process started down, waiting at most ``seconds``, after a SIGTERM.

    A batch system sends SIGTERM to the whole process group: Ray's own processes end with it (Ray blocks only
    Ctrl-C in them), and ``ray.shutdown``, run again by Ray's exit handler, would then wait a minute for its
    GCS and end the process with exit code 1. So after ``seconds`` Ray's exit handler is dropped
    (``atexit.unregister``) and the process ends with its own code.
    """
    if not ray_running():
        return
    thread = threading.Thread(target=ray.shutdown, name="hpsearch-ray-shutdown", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        atexit.unregister(ray.shutdown)


def fit_on_ray(search: Search, data: Dataset, metric: str, mode: str, tracker: tracking.TrialTracker,
               ray_path: str, max_failures: int, progress: Progress, ending: Ending, earlier: list[TrialRecord], *,
               restore: bool = False, new_path: str | None = None) -> None:
    """Run the search's trials on Ray Tune until ``ending`` says it is over.

    With ``restore``, Ray Tune's own restore first continues the interrupted search saved in ``ray_path``: its
    trials, their checkpoints, the searcher's and the scheduler's state. When the search needs more trials than
    that (a new search; more trials for a finished one; ``--num-samples`` raised), a new Tuner runs them in
    ``new_path`` (by default ``ray_path``), its searcher told ``earlier`` first; the parent run then names that
    folder, for a later resume.
    """
    global _todays_run_config
    end = {"deadline": ending.deadline_unix(), "goal": ending.goal, "metric": metric, "mode": mode}
    settings = {
        "train": train_settings(search, metric, mode),
        "threads": max(1, math.floor(search.resources["cpu"])),
        "gpu": search.resources["gpu"] > 0,
        "decision_epochs": _decision_epochs(search),
        "end": end if ending.may_end_early else None,
    }
    stopper = ray_end.stopper(ending, tracker, metric)
    keep = len(settings["decision_epochs"]) + 2  # the checkpoints a short trial makes (see _run_config)
    callback = tracking_callback()(tracker, settings["train"], search.num_samples, metric, mode, progress, ending,
                                   stopper.reasons)
    # A failing trial is reported by our callback (one line, the traceback in MLflow), not by Tune's logger.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    try:
        trials_data = data.for_trials()
        with shipping.shipped(trials_data) as file:  # the data's file, or None: through Ray's object store
            trainable = tune.with_resources(_trainable(file, trials_data, settings),
                                            {"cpu": search.resources["cpu"], "gpu": search.resources["gpu"]})
            if restore:
                _todays_run_config = _run_config(ray_path, callback, max_failures, stopper, keep)
                # its state: Ray's saved one
                restored = _searcher(search, metric, mode, ending, [], len(tracker.records))
                ray_end.set_today(searcher=restored, stopper=stopper)
                _restore(ray_path, trainable).fit()
                ending.trial_started()  # its trials ran in this run of the command
            if ending.may_start(len(tracker.records)):
                path = new_path or ray_path
                if path != ray_path:  # before any trial: a kill from here on resumes from this folder
                    tracker.store.call(resumed.set_ray_experiment, tracker.parent_run_id, path, len(tracker.records))
                if "://" not in path:
                    shutil.rmtree(path, ignore_errors=True)
                _todays_run_config = _run_config(path, callback, max_failures, stopper, keep)
                told = [r for r in tracker.records.values() if r.status in ENDED]  # the restored ones' too
                told += [r for r in earlier if r.trial_id not in tracker.records]  # a warm start's
                searcher = _searcher(search, metric, mode, ending, told, len(tracker.records))
                ray_end.set_today(searcher=searcher, stopper=stopper)
                samples = -1 if search.num_samples is None else search.num_samples - len(tracker.records)
                _new_tuner(search, samples, trainable, _todays_run_config, searcher).fit()
    finally:
        progress.close()
        _todays_run_config = None


def _trainable(file: shipping.DataFile | None, data: Dataset, settings: dict[str, Any]) -> Any:
    """:func:`ray_trial` with the trials' data and settings: the data read from ``file`` on one machine, shipped
    through Ray's object store by ``tune.with_parameters`` otherwise (see :mod:`hpsearch.execution.shipping`)."""
    if file is None:
        return tune.with_parameters(ray_trial, data=data, settings=settings)

    def trial(config: dict[str, Any]) -> None:
        ray_trial(config, shipping.received(file), settings)

    trial.__name__ = ray_trial.__name__  # Tune's restore checks that the trainable is the one it saved
    return trial


def _new_tuner(search: Search, num_samples: int, trainable: Any, run_config: tune.RunConfig,
               searcher: Any) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=searcher.metric,
            mode=searcher.mode,
            search_alg=searcher,
            scheduler=_scheduler(search),
            num_samples=num_samples,
            # On several nodes a reused actor on a fast node takes the trials of nodes whose workers still start.
            reuse_actors=len(checks.alive_nodes(ray.nodes())) <= 1,
            # As many trials at once as the cluster has slots, no more: Tune then starts that many actors at the
            # start and reuses them. Without a limit it keeps one trial pending, starts an actor for it, and
            # throws that actor away when a running trial ends first: on 2 cores, one slot spent starting
            # actors that never train. It also keeps TPE from proposing configurations it cannot run yet.
            max_concurrent_trials=parallel_slots(search.resources),
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=run_config,
    )


# The run configuration of the search this process runs: what a restored Tuner unpickles as its own.
_todays_run_config: Any = None


def _run_config(ray_path: str, callback: tune.Callback, max_failures: int, stopper: tune.Stopper,
                keep: int) -> tune.RunConfig:
    """Today's callback and failure settings, in a run configuration that a restored Tuner takes as its own.

    ``keep`` checkpoints per trial: as many as a trial of a few seconds makes (ASHA's rungs, its last epoch, one
    more). Ray Tune saves its whole experiment state (every trial, the searcher's study) each time a trial has
    made ``num_to_keep`` checkpoints since the last save: with one kept, at every checkpoint of every trial, which
    grows with the trials run and cost a search of 1,000 short trials more than its trials. Otherwise it saves the
    state every 10 s or more (5 % of the time at most); a resume goes on from the checkpoints that state names.

    Ray Tune pickles the run configuration (callbacks included) into the search's ``tuner.pkl``, and
    ``Tuner.restore`` brings back that copy, with no public way to replace it: its callback would track the
    search into the first run's tracker, and ``--max-failures`` would keep the first run's value. So the run
    configuration pickles as a reference to :data:`_todays_run_config` (Python's pickle protocol, ``__reduce__``),
    which :func:`fit_on_ray` sets before it creates or restores the Tuner.
    """
    return _todays_run_config_class()(
        name=ray_path.rsplit("/", 1)[1],
        storage_path=ray_path.rsplit("/", 1)[0],
        callbacks=[callback],
        stop=stopper,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        verbose=0,
    )


def _todays() -> tune.RunConfig:
    """What a pickled run configuration of ours unpickles as (see :func:`_run_config`)."""
    if _todays_run_config is None:
        raise RuntimeError("a search's tuner.pkl was loaded outside the search that restores it")
    return _todays_run_config


@functools.cache
def _todays_run_config_class() -> type:
    """``tune.RunConfig`` that pickles as a reference to today's (Ray Tune is imported here, once)."""
    import_ray()

    def shallow_copy(self: Any) -> Any:  # Tuner copies its run configuration: a plain copy, not today's
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    return type("TodaysRunConfig", (tune.RunConfig,),
                {"__reduce__": lambda self: (_todays, ()), "__copy__": shallow_copy, "__module__": __name__})


def parallel_slots(resources: dict[str, float]) -> int:
    """How many trials of this size the Ray cluster runs at once (its CPUs and GPUs divided by a trial's)."""
    import_ray()
    available = ray.cluster_resources()
    slots = [available.get(ray_key, 0) / resources[key] for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU"))
             if resources[key] > 0]
    return max(1, math.floor(min(slots, default=1) + 1e-9))


def _restore(ray_path: str, trainable: Any) -> tune.Tuner:
    """Ray Tune's own restore (trials, checkpoints, searcher and scheduler state), with today's run configuration
    (see :func:`_run_config`).

    What a kill left out of step in Ray's saved state is mended first (:mod:`hpsearch.execution.restore`).
    """
    ray_state.mend(ray_path, ExperimentAnalysis(str(ray_path)).trials)
    return tune.Tuner.restore(str(ray_path), trainable, resume_unfinished=True, resume_errored=False)


def _searcher(search: Search, metric: str, mode: str, ending: Ending, earlier: list[TrialRecord],
              trials: int) -> Any:
    """Optuna behind Ray's ``OptunaSearch``, in the study every executor's searcher starts from (the sampler of
    the in-process executors, told the search's ``earlier`` trials first), until the search ends (``trials``:
    those it has already)."""
    import optuna

    storage = optuna.storages.InMemoryStorage()
    study, _ = make_study(search, metric, mode, earlier, storage=storage, start=trials == 0)
    space = functools.partial(suggest_params, search.params)
    # A trial retried from its checkpoint (--max-failures) trains again the epochs since that checkpoint, and
    # OptunaSearch reports them to Optuna again: Optuna keeps the first value and warns. Expected here: not shown.
    warnings.filterwarnings("ignore", message=r"The reported value is ignored because this `step=\d+` is already",
                            category=UserWarning)
    inner = OptunaSearch(space=space, metric=metric, mode=mode, sampler=study.sampler,
                         storage=storage, study_name=STUDY_NAME)
    return ray_end.searcher(inner, ending, trials)


def _decision_epochs(search: Search) -> list[int]:
    """The epochs at which the scheduler decides on a trial: a trial reports and checkpoints at each of them."""
    if search.scheduler is None:
        return []
    return decision_epochs(search.scheduler.grace(search.max_epochs), search.scheduler.reduction_factor,
                           search.max_epochs)


def _scheduler(search: Search) -> ASHAScheduler | None:
    if search.scheduler is None:
        return None  # "fifo": every trial runs to the end (or to early stopping)
    return ASHAScheduler(
        time_attr="epoch",
        max_t=search.max_epochs,
        grace_period=search.scheduler.grace(search.max_epochs),
        reduction_factor=search.scheduler.reduction_factor,
    )


@functools.cache
def tracking_callback() -> type:
    """:class:`_TrackingCallback` as a Ray Tune callback (Ray Tune is imported here, once)."""
    import_ray()
    return type("_TrackingCallback", (_TrackingCallback, tune.Callback), {"__module__": __name__})


class _TrackingCallback:
    """Hands Ray Tune's trial events to the tracker and to the progress display.

    A plain class, so that this module loads without Ray: :func:`tracking_callback` mixes in ``tune.Callback``.
    """

    def __init__(self, tracker: tracking.TrialTracker, train_settings: dict[str, Any], total: int | None,
                 metric: str, mode: str, progress: Progress, ending: Ending | None = None,
                 stop_reasons: dict[str, str] | None = None) -> None:
        self.tracker = tracker
        self.train_settings = train_settings
        self.metric = metric
        self.progress = progress
        self.ending = ending
        self.stop_reasons = stop_reasons if stop_reasons is not None else {}  # the search's end's, by trial
        # a resumed search: the trials that ended before count too
        progress.begin(total, metric, mode, train_settings["max_epochs"], ended=tracker.records.values(),
                       time_left=ending.time_left if ending is not None else None)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = TrialConfig.from_params(trial.config, **self.train_settings).to_params()
        record = self.tracker.trial_started(trial.trial_id, params)
        last = trial.last_result or {}
        if record.status == Status.RUNNING and "epoch" in last:
            # A resumed trial continues from its last checkpoint; the result that came with it may never have
            # reached MLflow (a Ctrl-C while Ray Tune handled it): written now, or its epochs would be missing.
            self._epochs_reported(trial.trial_id, last)
        if record.status not in ENDED:  # Ray's snapshot can be older than the trial's end in MLflow
            self.progress.trial_started(record.name)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" in result:
            record = self.tracker.records[trial.trial_id]
            before = record.epochs
            self.tracker.node_reported(trial.trial_id, str(result.get(NODE_ID_KEY, "")),
                                       hostname=str(result.get("hostname", "unknown")),
                                       node_ip=str(result.get("node_ip", "")))
            self._epochs_reported(trial.trial_id, result)
            if record.epochs > before:
                self.progress.epoch(record.name, record.epochs, record.metrics)

    def _epochs_reported(self, trial_id: str, result: dict) -> None:
        """Every epoch of a trial's report (a report carries the epochs trained since the one before) to MLflow."""
        for metrics in epochs_of(result):
            self.tracker.epoch_reported(trial_id, metrics, ended_ms=metrics.get(ENDED_MS_KEY))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._ended_before(trial):
            return
        checkpoint = trial.checkpoint
        last = trial.last_result or {}
        if "epoch" in last:  # after a kill and a resume, Ray's last result may be newer than what MLflow got
            self._epochs_reported(trial.trial_id, last)
        record = self.tracker.trial_ended(trial.trial_id, model_dir=_local_dir(checkpoint) if checkpoint else None,
                                          early_stopped=bool(last.get("early_stopped")),
                                          stop_reason=self.stop_reasons.get(trial.trial_id))
        if self.ending is not None:
            self.ending.trial_ended(record)
        self._ended(record)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self._ended_before(trial):
            error = _error_text(trial)
            record = self.tracker.trial_ended(trial.trial_id, error=error)
            self._ended(record)
            if (reason := _disk_failure(error)) is not None:  # every trial would fail the same way
                raise MachineError(f"{record.name} failed: {reason}")

    def _ended_before(self, trial: Any) -> bool:
        """Whether the trial's end was recorded before Ray's snapshot knew it (a kill in between): Ray runs it
        again from its last checkpoint, and the end already counted is neither written nor shown again."""
        return self.tracker.records[trial.trial_id].status in ENDED

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close the runs of trials that Ray restored as already ended but whose end the tracker missed."""
        for trial in trials:
            record = self.tracker.records.get(trial.trial_id)
            if record is not None and record.status == Status.RUNNING:
                if trial.status == "TERMINATED":
                    self.on_trial_complete(0, trials, trial)
                elif trial.status == "ERROR":
                    self.on_trial_error(0, trials, trial)
        self.tracker.flush()

    def _ended(self, record: TrialRecord) -> None:
        self.progress.trial_ended(record.name, record.status, record.epochs, record.value(self.metric),
                                  record.error)


def _local_dir(checkpoint: tune.Checkpoint) -> str:
    """The checkpoint as a local folder: where it lies on local or shared storage, else downloaded (s3://...)."""
    if checkpoint.filesystem is None or checkpoint.filesystem.type_name == "local":
        return checkpoint.path
    return checkpoint.to_directory()


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def _disk_failure(error: str) -> str | None:
    """The line of a trial's traceback that says its disk failed it (full, read-only, an I/O error), else None.

    Read from the text: Ray Tune gives the driver a trial's error through files, and keeps no exception object
    where the disk refused to take one.
    """
    for line in reversed(error.splitlines()):
        found = re.search(r"\[Errno (\d+)\]", line)
        if found and int(found[1]) in _DISK_ERRNOS:
            return f"{line.strip()} ({errno.errorcode[int(found[1])]})"
    return None


def _error_text(trial: Any) -> str:
    """The trial's traceback, from the error file Ray Tune has just written beside the trial."""
    path = trial.error_file
    if path and Path(path).is_file() and (text := Path(path).read_text(errors="replace")).strip():
        return text
    try:
        return str(trial.get_error() or "the trial failed without an error message")
    except Exception as err:  # noqa: BLE001 - Ray could not write it down (a full disk): what reading it raised
        return f"the trial failed; its error could not be read back ({type(err).__name__}: {err})"


def nodes() -> list[dict[str, Any]]:
    """The Ray cluster's nodes, as ``ray.nodes()`` lists them."""
    import_ray()
    return ray.nodes()

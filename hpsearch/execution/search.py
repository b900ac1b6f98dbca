"""One search, from a validated space to a tracked result, on Ray Tune, in-process or batched.

Ray Tune runs the trials (ASHA scheduler, checkpoints, resources); Optuna proposes configurations through
Ray's ``OptunaSearch`` with our define-by-run space (conditional layer sizes); every trial runs
:func:`hpsearch.training.fit.fit` (through :func:`hpsearch.execution.trainable.ray_trial`); a Tune callback in the
driver hands each event to :class:`TrialTracker`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ray Tune's own CSV / JSON / TensorBoard loggers duplicate what MLflow records: off, before ray.tune loads.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C raises KeyboardInterrupt at once: Tune's own handler would stop the running trials as if they had ended,
# and their runs would be closed as finished. Trials checkpoint every epoch, so nothing is lost.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

from hpsearch import upstream_internals  # noqa: E402
from hpsearch.cluster import checks
from hpsearch.data.dataset import preprocessing_state  # noqa: E402
from hpsearch.data.sources import Dataset, load_dataset  # noqa: E402
from hpsearch.errors import SpaceError, TrackingError  # noqa: E402
from hpsearch.execution import batched
from hpsearch.execution import restore as ray_state
from hpsearch.execution.inprocess import fit_local, make_sampler, sample_config, train_settings  # noqa: E402
from hpsearch.execution.progress import Progress  # noqa: E402
from hpsearch.execution.trainable import NODE_ID_KEY, ray_trial  # noqa: E402
from hpsearch.figures import drawing
from hpsearch.model.network import load_model  # noqa: E402
from hpsearch.results import publish
from hpsearch.space import Search, suggest_params  # noqa: E402
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.schema import Status, TrialRecord, rank  # noqa: E402
from hpsearch.tracking.store import LocalStore, Store  # noqa: E402
from hpsearch.training.fit import TrialConfig, evaluate, metric_names  # noqa: E402
from hpsearch.training.model_check import check_model  # noqa: E402

__all__ = ["SearchInterrupted", "SearchOutcome", "resolve_objective", "run_search"]

# Ray Tune loads only for a search that runs on it (about 1.5 s of imports the in-process executor saves).
ray = tune = ExperimentAnalysis = ASHAScheduler = OptunaSearch = None


def _import_ray() -> None:
    global ray, tune, ExperimentAnalysis, ASHAScheduler, OptunaSearch
    if tune is None:
        import ray
        from ray import tune
        from ray.tune import ExperimentAnalysis
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        upstream_internals.skip_tune_callback_usage_tag()


DEFAULT_RESULTS_DIR = Path("ray_results")


@dataclass
class SearchOutcome:
    """What a finished search reports back to the command line."""

    experiment: str
    parent_run_id: str
    tracking_uri: str
    metric: str
    mode: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    test_metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    warnings: dict[str, str] = field(default_factory=dict)  # a step after the trials that failed -> its error
    experiment_id: str = ""

    def counts(self) -> dict[str, int]:
        statuses = [t.status for t in self.trials]
        return {s.value: statuses.count(s) for s in Status if s != Status.RUNNING}

    def ranked(self) -> list[TrialRecord]:
        """Trials that ended with a model and a value for the metric, best first (a failed trial is never best)."""
        return rank(self.trials, self.metric, self.mode)


def resolve_objective(search: Search, task: str) -> tuple[str, str]:
    """The metric and mode, defaulted and checked against what the task reports."""
    allowed = metric_names(task)
    metric = search.metric or "val_loss"
    if metric not in allowed:
        raise SpaceError(f"{metric!r} is not reported for a {task} task; choose one of {', '.join(allowed)}",
                         field="metric")
    mode = search.mode or ("max" if metric.endswith("accuracy") else "min")
    return metric, mode


def run_search(
    search: Search,
    space_file: Path,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    results_dir: Path = DEFAULT_RESULTS_DIR,
    resume: bool = False,
    max_failures: int = 0,
    executor: str = "ray",
    on_event: Callable[[str], None] = print,
    progress: Progress | None = None,
    plots: bool = True,
    address: str | None = None,
    storage: str | None = None,
    store: Store | None = None,
) -> SearchOutcome:
    """Run one search (or continue an interrupted one) and return its outcome.

    Every check that can fail on the user's input (space, data, metric, resources, cluster, tracking store)
    runs before the first run is written, so a mistake leaves nothing half-written. Raises
    :class:`SearchInterrupted` when the search was stopped before every trial ended (Ctrl-C). ``progress`` shows
    the trials as they go (plain lines on stdout when not given); ``plots`` logs the figures to the parent run.
    ``address`` is an existing Ray cluster (``auto``, ``HOST:PORT``); ``storage`` replaces ``results_dir`` for
    checkpoints (a shared folder or an object store URI, as several nodes need).
    ``executor`` is ``"ray"`` (Ray Tune), ``"local"`` (in-process, :mod:`~hpsearch.execution.inprocess`),
    ``"batched"`` (:mod:`~hpsearch.execution.batched`) or ``"auto"``. ``store`` is where the MLflow client is
    (:mod:`hpsearch.tracking.store`; by default in this process, for ``tracking_uri``).
    """
    progress = progress or Progress(live=False)
    tracking_uri = tracking.tracking_uri_from(tracking_uri)  # MLFLOW_TRACKING_URI, as MLflow's own tools
    store = store or LocalStore(tracking_uri)
    started = time.monotonic()
    experiment = _check_experiment_name(experiment or search.experiment or space_file.stem)
    _check_gpu_here(search.resources, address)
    on_event(f"loading data from {search.data if isinstance(search.data, str) else 'the space file'}")
    data = load_dataset(search, space_file)
    metric, mode = resolve_objective(search, data.task)
    if search.searcher == "grid":
        search = search.replace(num_samples=search.grid_size())
    if search.model is not None:  # the space file's own network, built and given one batch before anything is written
        check_model(sample_config(search, train_settings(search, metric, mode)), data, shown=str(space_file))
    for note in data.notes:  # what was done to the data: rows without a target, the task, columns changed
        on_event(note)
    if not search.searched_params() and search.num_samples > 1:
        on_event(f"note: params has no distribution, so all {search.num_samples} trials train the same "
                 "configuration (the defaults): add e.g. \"lr\": loguniform(1e-4, 1e-1) to search it")
    on_event(f"{data.task} task: {len(data.train)} train / {len(data.val)} validation / {len(data.test)} test rows, "
             + (f"examples of shape {data.input_shape}" if len(data.input_shape) > 1 else f"{data.n_features} features")
             + f"; optimising {metric} ({mode})")
    if address is not None or storage is not None:
        executor = "ray" if executor == "auto" else executor  # a cluster or shared storage means Ray Tune
    executor, why = batched.choose_executor(executor, search, data, resume=resume)
    if why:
        on_event(why)
    if executor in ("local", "batched") and (resume or max_failures or storage or (address and executor == "local")):
        raise SpaceError("--resume, --max-failures, --address and --storage need the Ray executor; "
                         "use --executor ray", field="executor")
    return _run_checked(search, space_file, data, metric, mode, experiment, executor, started,
                        plots=plots, store=store, tracking_uri=tracking_uri, results_dir=results_dir, resume=resume,
                        max_failures=max_failures, on_event=on_event, progress=progress, address=address,
                        storage=storage)


def _run_checked(search: Search, space_file: Path, data: Dataset, metric: str, mode: str, experiment: str,
                 executor: str, started: float, *, plots: bool, store: Store,
                 tracking_uri: str | None, results_dir: Path, resume: bool, max_failures: int,
                 on_event: Callable[[str], None], progress: Progress, address: str | None,
                 storage: str | None) -> SearchOutcome:
    """The search once its input has been checked: tracking, the trials, the figures and the best model."""
    on_ray = executor == "ray" or (executor == "batched" and batched.runs_on_ray(search, address))
    if on_ray and not _ray_running():
        on_event("starting Ray ..." if address is None else f"connecting to the Ray cluster at {address} ...")
    our_ray = on_ray and _start_ray(search.resources, address)
    if executor == "ray":
        checks.check_cluster(ray.nodes(), search.resources, tracking_uri, storage)
    on_event("opening the MLflow store ...")
    uri = store.connect()
    exp_id = store.call(tracking.experiment_id, experiment, uri, create=not resume)
    if resume:
        previous = store.call(tracking.find_resumable_search, exp_id, experiment)
        parent, ray_path = previous.run_id, previous.ray_experiment
        if previous.params.get("executor") in ("local", "batched"):
            raise TrackingError(f"search {parent} ran in-process (--executor local) and cannot be resumed; "
                                "run it again without --resume")
        search = _as_started(search, previous.params)
        tracker = tracking.TrialTracker.resume(store, exp_id, parent, search.max_epochs)
        cut = ray_state.set_aside_cut_saves(ray_path)
        if cut:
            on_event(f"Ray Tune's latest save of this search was cut short by the kill ({', '.join(cut)}, kept with "
                     "a .cut suffix): it resumes from its save before that one, or starts the trials afresh")
        _keep_trials_ray_knows(tracker, ray_path)
        ended = sum(r.status in tracking.ENDED for r in tracker.records.values())
        on_event(f"resuming search {parent} in experiment {experiment!r}: {ended} of {search.num_samples} "
                 "trials already ended and are kept")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        storage_root = checks.storage_path(storage, results_dir)  # a folder, or an object store URI
        ray_path = f"{storage_root.rstrip('/')}/{_slug(experiment)}-{stamp}-{uuid.uuid4().hex[:6]}"
        parent = store.call(tracking.start_search_run, exp_id, f"search-{stamp}",
                            {**_search_params(search, data, metric, mode), "executor": executor}, space_file, ray_path,
                            _data_record(data))
        tracker = tracking.TrialTracker(store, exp_id, parent, search.max_epochs)
        on_event(f"search {parent} in experiment {experiment!r}: {search.num_samples} trials, "
                 f"up to {search.max_epochs} epochs each, " + _where(executor, on_ray))
        if search.scheduler is not None:
            on_event(search.scheduler.describe(search.max_epochs))
    ray_ending = None
    try:
        if executor == "local":
            fit_local(search, data, metric, mode, tracker, Path(ray_path), progress)
        elif executor == "batched":
            batched.fit_batched(search, data, metric, mode, tracker, Path(ray_path), progress, on_ray=on_ray)
        else:
            _fit(search, data, metric, mode, tracker, ray_path, max_failures, progress)
        if our_ray:
            ray_ending = _end_ray_in_background()
        ended = sum(r.status in tracking.ENDED for r in tracker.records.values())
        if ended < search.num_samples:
            raise SearchInterrupted(f"{ended} of {search.num_samples} trials ended")
        outcome = SearchOutcome(experiment, parent, uri, metric, mode, list(tracker.records.values()), None,
                                experiment_id=exp_id)
        outcome.best = next(iter(outcome.ranked()), None)
        after = _AfterTrials(progress)  # from here on, an error is a warning: the trials' results stand
        if outcome.best is not None:
            outcome.test_metrics = after.step("test", _test_report_of, store, outcome.best, data) or {}
        pending = None
        if plots:
            pending = after.step("plots", drawing.start_search_plots, store, parent, outcome.best, data.test)
        for line in after.step("publish", store.call, publish.on_search_end, outcome.best, experiment=experiment,
                               parent_run_id=parent, metric=metric, mode=mode, space_file=space_file,
                               data=_data_field(search), preprocessing=preprocessing_state(data.preprocessor)) or []:
            on_event(line)
        if pending is not None:
            after.step("plots", pending.log, store, on_event=progress.detail)
        outcome.warnings = after.warnings
        if after.warnings:
            store.call(tracking.record_warnings, parent, after.warnings, after.tracebacks)
        store.call(tracking.finish_search_run, parent, outcome.counts(), outcome.best, outcome.test_metrics, metric)
    except BaseException as err:
        _abort(store, parent, tracker, err)
        raise
    finally:
        if ray_ending is not None:
            ray_ending.join()
    outcome.wall_s = time.monotonic() - started
    return outcome


def _where(executor: str, on_ray: bool) -> str:
    """Where the trials run, as the search's first line says it."""
    if executor == "batched":
        return "batched in populations" + (" on Ray" if on_ray else ", in-process")
    return "in-process" if executor == "local" else "on Ray Tune"


class _AfterTrials:
    """The steps that follow the trials (test evaluation, figures, the best model's publishing).

    The trials' results are tracked by then, so a step that fails must not fail the search: its error becomes
    a warning line, a tag ``hpsearch.warning.STEP`` on the parent run (the traceback in ``warnings/STEP.txt``),
    and the search's exit code stays what the trials decide. Ctrl-C still interrupts.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.warnings: dict[str, str] = {}
        self.tracebacks: dict[str, str] = {}

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or None when it raised (the error then recorded as the step's warning)."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any error after the trials: see the class docstring
            lines = [line for line in str(err).splitlines() if line.strip()]
            message = f"{type(err).__name__}: {lines[0] if lines else ''}".strip(": ")
            self.warnings[name] = message
            self.tracebacks[name] = "".join(traceback.format_exception(err))
            self.progress.warning(f"{_STEP_NAMES[name]} failed; the search's results stand: {message}")
            return None


_STEP_NAMES = {"test": "the best model's test evaluation", "plots": "the figures",
               "publish": "the best model's publishing"}


def _test_report_of(store: Store, best: TrialRecord, data: Dataset) -> dict[str, float]:
    """The best trial's test metrics, logged to its run (its model downloaded if it ended before a resume)."""
    if best.model_dir is None:  # it ended before a resume: its model is in MLflow
        best.model_dir = store.call(tracking.download_model, best.run_id, Path(tempfile.mkdtemp(prefix="hpsearch-")))
    metrics = _test_report(best, data)
    store.send(tracking.log_test_metrics, best.run_id, metrics)
    return metrics


def _abort(store: Store, parent: str, tracker: tracking.TrialTracker, error: BaseException) -> None:
    """After an interruption or a crash: close every run this search opened, none left RUNNING.

    An interruption is no error: no traceback is kept (the search resumes). Where the store itself failed (a
    tracking server gone, a full disk), closing fails too: the original error is what the user must see, so the
    store's second failure is dropped.
    """
    killed = isinstance(error, KeyboardInterrupt)
    try:
        tracker.close_open_runs()
        store.call(tracking.abort_search_run, parent, "" if killed else "".join(traceback.format_exception(error)),
                   killed=killed)
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def _data_field(search: Search) -> str | None:
    """The space file's ``data`` when it names a file or a data set (a function stays in the driver)."""
    return search.data if isinstance(search.data, str) else None


def _as_started(search: Search, params: dict[str, str]) -> Search:
    """The search with the budget and settings it was started with (a resume must not change them)."""
    resources = {"cpu": float(params["cpus_per_trial"]), "gpu": float(params["gpus_per_trial"])}
    return search.replace(num_samples=int(params["num_samples"]), max_epochs=int(params["max_epochs"]),
                          seed=int(params["seed"]), searcher=params["searcher"], resources=resources)


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before every trial ended (Ctrl-C); its runs are closed as KILLED, ready to resume."""


def _check_experiment_name(name: str) -> str:
    if not name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise SpaceError(f"must be 1 to 200 printable characters, but got {name!r}", field="experiment")
    return name


def _slug(name: str) -> str:
    """A folder name made from an experiment name: it can never leave the results folder."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")
    return slug[:80] or "experiment"


def _check_gpu_here(resources: dict[str, float], address: str | None) -> None:
    """Refuse GPUs per trial on a machine without one, before Ray starts (a Ray cluster is asked later).

    Only where the trials would run here: with ``--address`` (or ``RAY_ADDRESS``) the cluster may have GPUs,
    and a Ray this process already runs is checked by :func:`_start_ray`.
    """
    if resources["gpu"] <= 0 or address is not None or os.environ.get("RAY_ADDRESS") or _ray_running():
        return
    import torch

    if not torch.cuda.is_available():
        raise SpaceError(f"asks for {resources['gpu']:g} GPUs per trial, but this machine has no GPU "
                         "(torch.cuda.is_available() is false); use gpu 0, or a Ray cluster with GPUs (--address)",
                         field="resources.gpu")


def _ray_running() -> bool:
    """Whether this process already runs Ray (a library caller, the tests): without importing Ray."""
    loaded = sys.modules.get("ray")
    return loaded is not None and loaded.is_initialized()


# ----------------------------------------------------------------------------------------------- Ray Tune
def _start_ray(resources: dict[str, float], address: str | None = None) -> bool:
    """Start a local Ray, connect to the cluster at ``address``, or reuse the Ray this process already has;
    then check it can hold one trial. Returns whether this call started or connected it (the search then ends
    it, see :func:`_end_ray_in_background`)."""
    _import_ray()
    ours = not ray.is_initialized()
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
    available = ray.cluster_resources()
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        if resources[key] > available.get(ray_key, 0):
            raise SpaceError(f"asks for {resources[key]:g} {key.upper()}s per trial, but the Ray cluster has "
                             f"{available.get(ray_key, 0):g}", field=f"resources.{key}")
    return ours


def _end_ray_in_background() -> threading.Thread:
    """Shut Ray down while the search's end (test report, best model, figures) runs: none of it needs Ray.

    ``ray.shutdown`` stops a local Ray's processes one after the other, giving each up to a second to exit
    (about 1.2 s here, spent waiting, not computing), and at the interpreter's exit it first sleeps 0.5 s for
    workers' logs, which this search does not forward. The thread is joined before the search returns.
    """
    thread = threading.Thread(target=ray.shutdown, name="hpsearch-ray-shutdown")
    thread.start()
    return thread


def _fit(search: Search, data: Dataset, metric: str, mode: str, tracker: tracking.TrialTracker,
         ray_path: str, max_failures: int, progress: Progress) -> None:
    global _todays_run_config
    settings = {
        "train": train_settings(search, metric, mode),
        "threads": max(1, math.floor(search.resources["cpu"])),
        "gpu": search.resources["gpu"] > 0,
    }
    trainable = tune.with_resources(tune.with_parameters(ray_trial, data=data.for_trials(), settings=settings),
                                    {"cpu": search.resources["cpu"], "gpu": search.resources["gpu"]})
    callback = _ray_callback()(tracker, settings["train"], search.num_samples, metric, mode, progress)
    _todays_run_config = _run_config(ray_path, callback, max_failures)
    if ray_state.restorable(ray_path):
        tuner = _restore(ray_path, trainable)
    else:
        if "://" not in ray_path:
            shutil.rmtree(ray_path, ignore_errors=True)
        tuner = _new_tuner(search, metric, mode, trainable, _todays_run_config)
    # A failing trial is reported by our callback (one line, the traceback in MLflow), not by Tune's logger.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    try:
        tuner.fit()
    finally:
        progress.close()
        _todays_run_config = None


def _new_tuner(search: Search, metric: str, mode: str, trainable: Any, run_config: tune.RunConfig) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=_searcher(search, metric, mode),
            scheduler=_scheduler(search),
            num_samples=search.num_samples,
            # On several nodes a reused actor on a fast node takes the trials of nodes whose workers still start.
            reuse_actors=len(checks.alive_nodes(ray.nodes())) <= 1,
            # As many trials at once as the cluster has slots, no more: Tune then starts that many actors at the
            # start and reuses them. Without a limit it keeps one trial pending, starts an actor for it, and
            # throws that actor away when a running trial ends first: on 2 cores, one slot spent starting
            # actors that never train. It also keeps TPE from proposing configurations it cannot run yet.
            max_concurrent_trials=_parallel_slots(search.resources),
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=run_config,
    )


# The run configuration of the search this process runs: what a restored Tuner unpickles as its own.
_todays_run_config: Any = None


def _run_config(ray_path: str, callback: tune.Callback, max_failures: int) -> tune.RunConfig:
    """Today's callback and failure settings, in a run configuration that a restored Tuner takes as its own.

    Ray Tune pickles the run configuration (callbacks included) into the search's ``tuner.pkl``, and
    ``Tuner.restore`` brings back that copy, with no public way to replace it: its callback would track the
    search into the first run's tracker, and ``--max-failures`` would keep the first run's value. So the run
    configuration pickles as a reference to :data:`_todays_run_config` (Python's pickle protocol, ``__reduce__``),
    which :func:`_fit` sets before it creates or restores the Tuner.
    """
    return _todays_run_config_class()(
        name=ray_path.rsplit("/", 1)[1],
        storage_path=ray_path.rsplit("/", 1)[0],
        callbacks=[callback],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
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
    _import_ray()

    def shallow_copy(self: Any) -> Any:  # Tuner copies its run configuration: a plain copy, not today's
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    return type("TodaysRunConfig", (tune.RunConfig,),
                {"__reduce__": lambda self: (_todays, ()), "__copy__": shallow_copy, "__module__": __name__})


def _parallel_slots(resources: dict[str, float]) -> int:
    """How many trials of this size the Ray cluster runs at once (its CPUs and GPUs divided by a trial's)."""
    available = ray.cluster_resources()
    slots = [available.get(ray_key, 0) / resources[key] for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU"))
             if resources[key] > 0]
    return max(1, math.floor(min(slots, default=1) + 1e-9))


def _keep_trials_ray_knows(tracker: tracking.TrialTracker, ray_path: str) -> None:
    """Delete the runs of the trials that Ray's last snapshot does not know (opened in the instant before a kill).

    Ray proposes those trials again, and each trial must have exactly one run. When Ray saved nothing before
    the kill, the search starts afresh and every run goes.
    """
    _import_ray()
    known = {t.trial_id for t in ExperimentAnalysis(ray_path).trials} if ray_state.restorable(ray_path) else set()
    tracker.forget(set(tracker.records) - known)


def _restore(ray_path: str, trainable: Any) -> tune.Tuner:
    """Ray Tune's own restore (trials, checkpoints, searcher and scheduler state), with today's run configuration
    (see :func:`_run_config`).

    What a kill left out of step in Ray's saved state is mended first (:mod:`hpsearch.execution.restore`).
    """
    ray_state.mend(ray_path, ExperimentAnalysis(str(ray_path)).trials)
    return tune.Tuner.restore(str(ray_path), trainable, resume_unfinished=True, resume_errored=False)


def _searcher(search: Search, metric: str, mode: str) -> OptunaSearch:
    """Optuna behind Ray's ``OptunaSearch``, with the sampler the in-process executor uses too."""
    sampler = make_sampler(search)
    space = functools.partial(suggest_params, search.params)
    return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler)


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
def _ray_callback() -> type:
    """:class:`_TrackingCallback` as a Ray Tune callback (Ray Tune is imported here, once)."""
    _import_ray()
    return type("_TrackingCallback", (_TrackingCallback, tune.Callback), {"__module__": __name__})


class _TrackingCallback:
    """Hands Ray Tune's trial events to the tracker and to the progress display.

    A plain class, so that this module loads without Ray: :func:`_ray_callback` mixes in ``tune.Callback``.
    """

    def __init__(self, tracker: tracking.TrialTracker, train_settings: dict[str, Any], total: int,
                 metric: str, mode: str, progress: Progress) -> None:
        self.tracker = tracker
        self.train_settings = train_settings
        self.metric = metric
        self.progress = progress
        progress.begin(total, metric, mode, train_settings["max_epochs"])
        for record in tracker.records.values():  # a resumed search: the trials that ended before count too
            if record.status in tracking.ENDED:
                progress.already_ended(record.name, record.status, record.metrics.get(metric), record.epochs)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = TrialConfig.from_params(trial.config, **self.train_settings).to_params()
        record = self.tracker.trial_started(trial.trial_id, params)
        last = trial.last_result or {}
        if record.status == Status.RUNNING and "epoch" in last:
            # A resumed trial continues from its last checkpoint; the result that came with it may never have
            # reached MLflow (a Ctrl-C while Ray Tune handled it): written now, or its epoch would be missing.
            self.tracker.epoch_reported(trial.trial_id, last)
        if record.status not in tracking.ENDED:  # Ray's snapshot can be older than the trial's end in MLflow
            self.progress.trial_started(record.name)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" in result:
            record = self.tracker.records[trial.trial_id]
            before = record.epochs
            self.tracker.node_reported(trial.trial_id, str(result.get(NODE_ID_KEY, "")),
                                       hostname=str(result.get("hostname", "unknown")),
                                       node_ip=str(result.get("node_ip", "")))
            self.tracker.epoch_reported(trial.trial_id, result)
            if record.epochs > before:
                self.progress.epoch(record.name, record.epochs, record.metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._ended_before(trial):
            return
        checkpoint = trial.checkpoint
        last = trial.last_result or {}
        if "epoch" in last:  # after a kill and a resume, Ray's last result may be newer than what MLflow got
            self.tracker.epoch_reported(trial.trial_id, last)
        record = self.tracker.trial_ended(trial.trial_id, model_dir=_local_dir(checkpoint) if checkpoint else None,
                                          early_stopped=bool(last.get("early_stopped")))
        self._ended(record)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self._ended_before(trial):
            self._ended(self.tracker.trial_ended(trial.trial_id, error=_error_text(trial)))

    def _ended_before(self, trial: Any) -> bool:
        """Whether the trial's end was recorded before Ray's snapshot knew it (a kill in between): Ray runs it
        again from its last checkpoint, and the end already counted is neither written nor shown again."""
        return self.tracker.record(trial.trial_id).status in tracking.ENDED

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
        self.progress.trial_ended(record.name, record.status, record.epochs, record.metrics.get(self.metric),
                                  record.error)


def _local_dir(checkpoint: tune.Checkpoint) -> str:
    """The checkpoint as a local folder: where it lies on local or shared storage, else downloaded (s3://...)."""
    if checkpoint.filesystem is None or checkpoint.filesystem.type_name == "local":
        return checkpoint.path
    return checkpoint.to_directory()


def _error_text(trial: Any) -> str:
    """The trial's traceback, from the error file Ray Tune has just written beside the trial."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return str(trial.get_error() or "the trial failed without an error message")


# ------------------------------------------------------------------------------------------ search outcome
def _test_report(best: TrialRecord, data: Dataset) -> dict[str, float]:
    """The best trial's model on the held-out test split: the one figure no trial has seen."""
    model, spec = load_model(best.model_dir)
    return evaluate(model, data.test, spec, prefix="test_")


def _data_record(data: Dataset) -> dict[str, Any]:
    """What was done to the data, for the parent run's ``columns.json``: the lines shown and the column plan."""
    return {"notes": list(data.notes), "plan": getattr(data.preprocessor, "plan", None)}


def _search_params(search: Search, data: Dataset, metric: str, mode: str) -> dict[str, Any]:
    scheduler = search.scheduler
    params = {
        "data": search.data if isinstance(search.data, str) else getattr(search.data, "__name__", "callable"),
        "target": search.target,
        "task": data.task,
        "metric": metric,
        "mode": mode,
        "num_samples": search.num_samples,
        "max_epochs": search.max_epochs,
        "scheduler": "asha" if scheduler else "fifo",
        "searcher": search.searcher,
        "seed": search.seed,
        "early_stopping_patience": search.early_stopping_patience,
        "cpus_per_trial": search.resources["cpu"],
        "gpus_per_trial": search.resources["gpu"],
        "split": "/".join(f"{f:g}" for f in search.split),
        "n_features": data.n_features,
        "n_train": len(data.train),
        "drop": json.dumps(list(search.drop)),
        **({"model": search.model.__name__} if search.model is not None else {}),
        **search.describe_params(),
    }
    if scheduler:
        params.update(grace_period=scheduler.grace(search.max_epochs), reduction_factor=scheduler.reduction_factor)
    return params


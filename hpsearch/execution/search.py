"""The orchestrator: one search, from a validated space to a tracked result.

:func:`run_search` checks everything the user gave (space, data, metric, resources, cluster, store) before it
writes anything, opens the parent run, hands the trials to one executor (:mod:`~hpsearch.execution.ray_tune`,
:mod:`~hpsearch.execution.inprocess` or :mod:`~hpsearch.execution.batched`, chosen by
:mod:`~hpsearch.execution.choice`), each of which reports every trial to the same
:class:`~hpsearch.tracking.tracker.TrialTracker`; then it tests the best model, draws the figures and publishes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpsearch.cluster import checks
from hpsearch.data.dataset import preprocessing_state  # noqa: E402
from hpsearch.data.sources import Dataset, load_dataset  # noqa: E402
from hpsearch.errors import HpsearchError, MachineError, SpaceError, machine_failure  # noqa: E402
from hpsearch.execution import batched, continuation, ray_tune
from hpsearch.execution.choice import choose_executor, runs_on_ray
from hpsearch.execution.inprocess import fit_local
from hpsearch.execution.outcome import SearchOutcome
from hpsearch.execution.progress import Progress  # noqa: E402
from hpsearch.execution.sampling import first_point, sample_config, train_settings
from hpsearch.execution.stopping import TRIALS, Ending
from hpsearch.figures import drawing
from hpsearch.model.network import load_model  # noqa: E402
from hpsearch.results import baseline, publish
from hpsearch.results import ensemble as ensembles
from hpsearch.results import refit as refits
from hpsearch.space import Search  # noqa: E402
from hpsearch.space.defaults import describe_space
from hpsearch.tracking import lease, resumed
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.connection import experiment_id, tracking_uri_from
from hpsearch.tracking.schema import Status, TrialRecord  # noqa: E402
from hpsearch.tracking.store import LocalStore, Store  # noqa: E402
from hpsearch.training.fit import evaluate, metric_names  # noqa: E402
from hpsearch.training.model_check import check_model  # noqa: E402

__all__ = ["SearchInterrupted", "SearchOutcome", "abort_in_progress", "resolve_objective", "run_search"]


DEFAULT_RESULTS_DIR = Path("ray_results")


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
    asked: dict[str, Any] | None = None,
    max_failures: int = 0,
    executor: str = "ray",
    progress: Progress | None = None,
    plots: bool = True,
    address: str | None = None,
    storage: str | None = None,
    store: Store | None = None,
) -> SearchOutcome:
    """Run one search (or continue the latest one of its experiment) and return its outcome.

    Every check that can fail on the user's input (space, data, metric, resources, cluster, tracking store, what
    a resume or a warm start continues from) runs before the first run is written, so a mistake leaves nothing
    half-written. Raises :class:`SearchInterrupted` when the search was stopped before it ended (Ctrl-C,
    SIGTERM). ``progress`` shows the search's lines and its trials as they go (plain lines on stdout when not
    given); ``plots`` logs the figures to the parent run.
    ``resume`` continues the experiment's latest search, interrupted or finished, with the executor and the
    settings it started with; ``asked`` is what the resume asks for: ``num_samples`` (trials in all) and
    ``time_budget`` (seconds of this run; without ``num_samples``, trials until it is spent).
    ``address`` is an existing Ray cluster (``auto``, ``HOST:PORT``); ``storage`` replaces ``results_dir`` for
    checkpoints (a shared folder or an object store URI, as several nodes need).
    ``executor`` is ``"ray"`` (Ray Tune), ``"local"`` (in-process, :mod:`~hpsearch.execution.inprocess`),
    ``"batched"`` (:mod:`~hpsearch.execution.batched`) or ``"auto"``. ``store`` is where the MLflow client is
    (:mod:`hpsearch.tracking.store`; by default in this process, for ``tracking_uri``).
    """
    progress = progress or Progress(live=False)
    on_event = progress.message  # one voice: every line of the search goes through the progress display
    tracking_uri = tracking_uri_from(tracking_uri)  # MLFLOW_TRACKING_URI, as MLflow's own tools
    store = store or LocalStore(tracking_uri)
    experiment = _check_experiment_name(experiment or search.experiment or space_file.stem)
    asked = dict(asked or {})
    previous = None
    if resume:  # refused here, before the data is loaded, when there is nothing to continue
        search, previous = continuation.check_resume(store, tracking_uri, experiment, search, asked)
        executor = previous.executor
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
    if search.default_params:
        on_event(f"params: none given, so the built-in network's default space is searched: "
                 f"{describe_space(search.params)}")
    elif not search.searched_params() and (search.num_samples or 2) > 1:
        on_event(f"note: params has no distribution, so all {search.num_samples or 'its'} trials train the same "
                 "configuration (the defaults): add e.g. \"lr\": loguniform(1e-4, 1e-1) to search it")
    on_event(f"{data.task} task: {len(data.train)} train / {len(data.val)} validation / {len(data.test)} test rows, "
             + (f"examples of shape {data.input_shape}" if len(data.input_shape) > 1 else f"{data.n_features} features")
             + f"; optimising {metric} ({mode})")
    source = continuation.warm_source(previous) if previous is not None else None
    warm = continuation.warm_start(store, tracking_uri, search, metric, on_event, source=source)
    if address is not None or storage is not None:
        executor = "ray" if executor == "auto" else executor  # a cluster or shared storage means Ray Tune
    executor, why = choose_executor(executor, search, data, resume=resume)
    if why:
        on_event(why)
    first = first_point(search)
    if first and not resume and not warm[1]:
        on_event("the first trial is the built-in network's default configuration within the space: "
                 + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in first.items()))
    if executor in ("local", "batched") and (max_failures or storage or (address and executor == "local")):
        raise SpaceError("--max-failures, --address and --storage need the Ray executor; use --executor ray",
                         field="executor")
    drawer = drawing.Drawer.start() if plots else None  # its imports overlap with Ray's start and the trials
    try:
        outcome = _run_checked(search, space_file, data, metric, mode, experiment, executor, drawer,
                               plots=plots, store=store, tracking_uri=tracking_uri, results_dir=results_dir,
                               resume=resume, asked=asked, warm=warm, max_failures=max_failures, on_event=on_event,
                               progress=progress, address=address, storage=storage)
    finally:
        if drawer is not None:
            drawer.close()
    return outcome


def _run_checked(search: Search, space_file: Path, data: Dataset, metric: str, mode: str, experiment: str,
                 executor: str, drawer: drawing.Drawer | None, *, plots: bool, store: Store,
                 tracking_uri: str | None, results_dir: Path, resume: bool, asked: dict[str, Any],
                 warm: tuple[str | None, list[TrialRecord]], max_failures: int, on_event: Callable[[str], None],
                 progress: Progress, address: str | None, storage: str | None) -> SearchOutcome:
    """The search once its input has been checked: tracking, the trials, the figures and the best model."""
    tree = baseline.fit_tree_beside(data) if search.baseline else None
    on_ray = executor == "ray" or (executor == "batched" and runs_on_ray(search, address))
    if on_ray and not ray_tune.ray_running():
        on_event("starting Ray ..." if address is None else f"connecting to the Ray cluster at {address} ...")
    our_ray = on_ray and ray_tune.start_ray(search.resources, address)
    if executor == "ray":
        checks.check_cluster(ray_tune.nodes(), search.resources, tracking_uri, storage)
    on_event("opening the MLflow store ...")
    uri = store.connect()
    exp_id = store.call(experiment_id, experiment, uri, create=not resume)
    reopened = None
    if resume:
        reopened = continuation.reopen(store, exp_id, experiment, search, asked, on_event, on_ray=executor == "ray")
        parent, tracker, ray_path = reopened.run_id, reopened.tracker, reopened.ray_path
        session = reopened.previous.session
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        storage_root = checks.storage_path(storage, results_dir)  # a folder, or an object store URI
        ray_path = f"{storage_root.rstrip('/')}/{_slug(experiment)}-{stamp}-{uuid.uuid4().hex[:6]}"
        session = 1
        parent = store.call(tracking.start_search_run, exp_id, f"search-{stamp}",
                            {**_search_params(search, data, metric, mode), "executor": executor}, space_file, ray_path,
                            _data_record(data), lease.me(continuation.asked_of(search)))
        if warm[0] is not None:
            store.send(resumed.record_warm_start, parent, warm[0])
        tracker = tracking.TrialTracker(store, exp_id, parent, search.max_epochs)
    ending = Ending(search, metric, mode, earlier=tracker.records.values(), started=progress.started,
                    clock=progress.clock)
    if not resume:
        on_event(f"search {parent} in experiment {experiment!r}: {ending.describe()}, "
                 f"up to {search.max_epochs} epochs each, " + _where(executor, on_ray))
        if search.scheduler is not None:
            on_event(search.scheduler.describe(search.max_epochs))
    earlier = [r for r in tracker.records.values() if r.status in tracking.ENDED] + warm[1]
    ray_ending = None
    _in_progress.append(lambda: _abort(store, parent, tracker, SearchInterrupted(), session, progress.ended_names))
    try:
        if executor == "local":
            fit_local(search, data, metric, mode, tracker, Path(ray_path), progress, ending, earlier)
        elif executor == "batched":
            batched.fit_batched(search, data, metric, mode, tracker, Path(ray_path), progress, ending, earlier,
                                on_ray=on_ray)
        else:
            ray_tune.fit_on_ray(search, data, metric, mode, tracker, ray_path, max_failures, progress, ending, earlier,
                                restore=reopened is not None and reopened.restore,
                                new_path=reopened.new_path if reopened is not None else None)
        if our_ray:
            ray_ending = ray_tune.end_ray_in_background()
        tracker.finish()  # every run id known
        ended = sum(r.status in tracking.ENDED for r in tracker.records.values())
        reason = ending.final_reason()
        if reason == TRIALS and search.num_samples is not None and ended < search.num_samples:
            raise SearchInterrupted(f"{ended} of {search.num_samples} trials ended")
        if any(r.status == Status.RUNNING for r in tracker.records.values()):
            tracker.close_open_runs()  # trials a resume had to run again, left when the search ended first
        outcome = SearchOutcome(experiment, parent, uri, metric, mode, list(tracker.records.values()), None,
                                experiment_id=exp_id, end_reason=reason, time_used_s=ending.used_s(),
                                time_budget_s=search.time_budget, ended_because=ending.explain(len(tracker.records)))
        outcome.best = next(iter(outcome.ranked()), None)
        after = _AfterTrials(progress)  # from here on, an error is a warning: the trials' results stand
        if outcome.best is not None:
            outcome.test_metrics = after.step("test", _test_report_of, store, outcome.best, data) or {}
        pending = None
        if plots:  # drawn in the drawer's process (if any) while the ensemble, the tree and the publishing end
            pending = after.step("plots", drawing.start_search_plots, store, parent, outcome.best, data.test, drawer,
                                 tracker.curves())
        state, holdout = preprocessing_state(data.preprocessor), ensembles.holdout_of(data)
        choosing = None  # the store's process chooses the ensemble while the tree ends here
        if outcome.best is not None and search.ensemble:
            choosing = after.step("ensemble", store.submit, ensembles.choose, outcome.ranked(), holdout, state,
                                  steps=search.ensemble, metric=metric, mode=mode)
        if tree is not None:
            outcome.tree = after.step("tree", tree.result) or {}
        if choosing is not None:
            outcome.ensemble = after.step("ensemble", choosing.result)
        if outcome.best is not None and search.refit:
            members = after.step("refit", refits.refit_published, outcome.ensemble, outcome.best, outcome.trials,
                                 data, train_settings(search, metric, mode), search.resources["cpu"])
            if members:
                outcome.refit = after.step("refit", store.call, ensembles.score, members, holdout, state)
        for line in after.step("publish", store.call, publish.on_search_end, outcome.best, experiment=experiment,
                               parent_run_id=parent, metric=metric, mode=mode, space_file=space_file,
                               data=_data_field(search), preprocessing=state, ensemble=outcome.ensemble,
                               refit=outcome.refit, tree=outcome.tree) or []:
            on_event(line)
        if pending is not None:
            after.step("plots", pending.log, store, on_event=progress.detail)
        outcome.warnings = after.warnings
        if after.warnings:
            store.call(tracking.record_warnings, parent, after.warnings, after.tracebacks)
        store.call(tracking.finish_search_run, parent, outcome.counts(), outcome.best, outcome.test_metrics, metric,
                   session=session, end_reason=reason, ended=outcome.time_figures())
    except BaseException as err:
        held = _abort(store, parent, tracker, err, session, progress.ended_names)
        if held and (reason := _machine_reason(err)):  # the machine failed: say what MLflow holds now
            raise MachineError(f"{reason}; in MLflow: {held}") from err
        if isinstance(err, KeyboardInterrupt) and not isinstance(err, SearchInterrupted):
            ended = sum(r.status in tracking.ENDED for r in tracker.records.values())
            raise SearchInterrupted(f"{ended} of {len(tracker.records)} trials ended") from err
        raise
    finally:
        _in_progress.clear()
        if ray_ending is not None:
            ray_ending.join()
    outcome.wall_s = progress.elapsed()
    return outcome


_in_progress: list[Callable[[], None]] = []  # closes the runs of the search this process runs


def abort_in_progress() -> bool:
    """Close the runs of the search this process runs, as an interruption does, from another thread: for a
    SIGTERM that found the main thread blocked (:mod:`hpsearch.cli.terminate`). Returns whether there was one."""
    for abort in list(_in_progress):
        abort()
    return bool(_in_progress)


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


_STEP_NAMES = {"test": "the best model's test evaluation", "ensemble": "the ensemble's selection",
               "refit": "the refit on training + validation rows", "tree": "the tree baseline", "plots": "the figures",
               "publish": "the best model's publishing"}


def _test_report_of(store: Store, best: TrialRecord, data: Dataset) -> dict[str, float]:
    """The best trial's test metrics, logged to its run (its model downloaded if it ended before a resume)."""
    if best.model_dir is None:  # it ended before a resume: its model is in MLflow
        best.model_dir = store.call(tracking.download_model, best.run_id, Path(tempfile.mkdtemp(prefix="hpsearch-")))
    metrics = _test_report(best, data)
    store.send(tracking.log_test_metrics, best.run_id, metrics)
    return metrics


def _abort(store: Store, parent: str, tracker: tracking.TrialTracker, error: BaseException, session: int,
           shown_ended: set[str]) -> str:
    """After an interruption or a crash: close every run this search opened, none left RUNNING. ``shown_ended``:
    the trials the output announced as ended.

    An interruption is no error: no traceback is kept (the search resumes). Where the store itself failed (a
    tracking server gone, a full disk), closing may fail too: the original error is what the user must see, so the
    store's second failure is dropped. Returns what MLflow then holds (``2 completed, 1 killed, the search
    failed``), or "" when the runs could not be closed.
    """
    killed = isinstance(error, KeyboardInterrupt)
    with contextlib.suppress(Exception):  # a write sent earlier that failed is reported here, not by the closing
        store.call(tracking.written)
    try:
        held = tracker.close_open_runs()
        store.call(tracking.abort_search_run, parent, "" if killed else "".join(traceback.format_exception(error)),
                   killed=killed, session=session)
    except Exception:  # noqa: BLE001 - see the docstring
        return ""
    statuses = list(held.values())
    counts = [f"{statuses.count(s)} {s}" for s in dict.fromkeys(sorted(statuses))]
    lost = sorted(name for name in shown_ended if held.get(name) == Status.KILLED)
    if lost:  # shown as ended, but their end could not be written
        counts.append(f"{', '.join(lost)} could not be saved")
    return ", ".join([*counts, f"the search {'killed' if killed else 'failed'}"])


def _machine_reason(err: BaseException) -> str | None:
    """The one line of a failure of the machine or the store in ``err`` or its causes (else None)."""
    if isinstance(err, (HpsearchError, KeyboardInterrupt)):
        return None
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, MachineError):
            return str(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return machine_failure(err)


def _data_field(search: Search) -> str | None:
    """The space file's ``data`` when it names a file or a data set (a function stays in the driver)."""
    return search.data if isinstance(search.data, str) else None


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before it ended (Ctrl-C, SIGTERM); its runs are closed as KILLED, ready to resume."""


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
    and a Ray this process already runs is checked by :func:`~hpsearch.execution.ray_tune.start_ray`.
    """
    if resources["gpu"] <= 0 or address is not None or os.environ.get("RAY_ADDRESS") or ray_tune.ray_running():
        return
    import torch

    if not torch.cuda.is_available():
        raise SpaceError(f"asks for {resources['gpu']:g} GPUs per trial, but this machine has no GPU "
                         "(torch.cuda.is_available() is false); use gpu 0, or a Ray cluster with GPUs (--address)",
                         field="resources.gpu")


# ----------------------------------------------------------------------------------------------- Ray Tune


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
        "ensemble": search.ensemble,
        "baseline": search.baseline,
        "cv": search.cv,
        "refit": search.refit,
        "time_budget": search.time_budget,
        "patience": search.patience,
        "goal": search.goal,
        "warm_start": search.warm_start,
        **({"model": search.model.__name__} if search.model is not None else {}),
        **search.describe_params(),
    }
    if scheduler:
        params.update(grace_period=scheduler.grace(search.max_epochs), reduction_factor=scheduler.reduction_factor)
    return params


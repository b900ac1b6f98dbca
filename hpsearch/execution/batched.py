"""The batched executor: trials trained a population at a time (``--executor batched``, or chosen by ``auto``).

Small networks leave a core idle: a trial's step is a few tiny matrix products, and the time goes to Python and
dispatch. Here Optuna (the sampler of the in-process executor) is asked for a whole population of trials, which
:class:`~hpsearch.training.population.Population` trains together, epoch by epoch. After each epoch the driver
decides per trial, in a fixed order (trial number): early stopping (patience, as ``train.fit`` counts it) and Optuna's
successive-halving pruner (ASHA's rungs: ``grace_period``, ``reduction_factor``) stop members one by one, and a
stopped member leaves the population. Each trial is tracked exactly as :mod:`~hpsearch.execution.inprocess`
tracks it (its own child run, params, per-epoch metrics, status, model and loss curve); a member whose loss
turns non-finite fails alone. The next population is proposed from every trial told so far.

Populations run in this process, or, on Ray (``--address``, GPUs per trial, or a Ray this process already runs),
one per Ray actor with the trial resources, as many at once as the cluster has slots. Populations that run at
once form a wave: every population of a wave trains one epoch, then the driver reads their results in a fixed
order, so the same space file and seed give the same trials and metrics, run after run. A resumed search keeps its
ended trials (the searcher is told them first) and trains its unfinished ones again, from their first epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from hpsearch.data.sources import Dataset
from hpsearch.execution.population_worker import PopulationWorker, StepResult
from hpsearch.execution.progress import Progress
from hpsearch.execution.ray_tune import parallel_slots
from hpsearch.execution.sampling import RERUN_OF, make_study, queue_unfinished, train_settings
from hpsearch.execution.shipping import DataFile, shipped
from hpsearch.execution.stopping import Ending
from hpsearch.space import Search, suggest_params
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.schema import TrialRecord
from hpsearch.training.fit import TrialConfig, early_stopping, stops_early

__all__ = ["POPULATION_SIZE", "fit_batched", "population_sizes"]

#: Trials per population at most; a search is cut into populations of equal size (within one trial).
POPULATION_SIZE = 16


def population_sizes(num_samples: int, slots: int = 1) -> list[int]:
    """The search cut into populations: at least one per slot (when there are trials for it), at most
    :data:`POPULATION_SIZE` trials each, sizes equal within one trial (24 trials, 1 slot: 12 + 12)."""
    count = max(min(slots, num_samples), math.ceil(num_samples / POPULATION_SIZE))
    size, extra = divmod(num_samples, count)
    return [size + (i < extra) for i in range(count)]


@dataclass
class _Member:
    """One trial of a population, as the driver follows it."""

    trial: optuna.Trial
    trial_id: str
    name: str
    model_dir: Path
    config: TrialConfig
    state: dict[str, Any] = field(default_factory=lambda: {"best": None, "bad_epochs": 0})  # as train.fit keeps it
    early_stopped: bool = False
    replayed: int = 0  # epochs MLflow already has (a trial run again after a resume): not stopped before them


#: What ends a member after an epoch: its last epoch or early stopping (NORMAL), the pruner, or the search's end.
NORMAL, PRUNED = "", "scheduler"


def fit_batched(search: Search, data: Dataset, metric: str, mode: str, tracker: tracking.TrialTracker,
                model_root: Path, progress: Progress, ending: Ending, earlier: list[TrialRecord], *,
                on_ray: bool = False) -> None:
    """Run the search's trials, a population at a time, tracked and shown like the other executors', until
    ``ending`` says the search is over. ``earlier``: the trials the searcher is told first."""
    threads = torch.get_num_threads()
    per_trial = max(1, math.floor(search.resources["cpu"]))
    workers: list[Any] = []
    shipping = contextlib.ExitStack()
    try:
        if on_ray:
            workers = _ray_workers(search, data, shipping.enter_context(shipped(data.for_trials())), per_trial)
        else:
            torch.set_num_threads(per_trial)  # as a Ray trial with these CPUs
            slots = max(1, _cores() // per_trial)  # stacks trained at once: as many as Ray would run trials
            workers = [_InProcess(PopulationWorker(data.for_trials(), threads=per_trial, write_here=True,
                                                   groups_at_once=slots))]
        _Search(search, metric, mode, tracker, model_root, progress, ending, earlier).run(workers)
    finally:
        torch.set_num_threads(threads)
        for worker in workers:
            worker.close()
        shipping.close()
        progress.close()


class _Search:
    """The driver's loop: ask a wave of populations, train it epoch by epoch, decide, track, tell."""

    def __init__(self, search: Search, metric: str, mode: str, tracker: tracking.TrialTracker, model_root: Path,
                 progress: Progress, ending: Ending, earlier: list[TrialRecord]) -> None:
        self.search, self.metric, self.mode = search, metric, mode
        self.tracker, self.model_root, self.progress, self.ending = tracker, model_root, progress, ending
        self.settings = train_settings(search, metric, mode)
        self.study, _ = make_study(search, metric, mode, earlier, start=not tracker.records)
        queued, self.free = queue_unfinished(self.study, search, tracker)  # these start first
        self.started = len(tracker.records) - queued - len(self.free)  # the trials that ended, or that run now

    def run(self, workers: list[Any]) -> None:
        self.progress.begin(self.search.num_samples, self.metric, self.mode, self.search.max_epochs,
                            time_left=self.ending.time_left, ended=self.tracker.records.values())
        for wave in self._waves(len(workers)):
            populations = [self._start_population(worker, size) for worker, size in zip(workers, wave, strict=False)]
            self._train(list(zip(workers, populations, strict=False)))
        self.tracker.flush()

    def _waves(self, slots: int) -> Iterator[list[int]]:
        """The sizes of the populations trained at once, wave after wave, while the search may start trials."""
        left = self.search.num_samples
        sizes = population_sizes(left - self.started, slots) if left is not None and left > self.started else []
        start = 0
        while self.ending.may_start(self.started):
            wave = sizes[start : start + slots] if left is not None else [POPULATION_SIZE] * slots
            start += slots
            if not wave:
                return
            self.started += sum(wave)
            self.ending.trial_started()
            yield wave

    def _start_population(self, worker: Any, size: int) -> dict[str, _Member]:
        """Ask the sampler for ``size`` trials, open their runs, and hand their configs to the worker."""
        members: dict[str, _Member] = {}
        configs: dict[str, TrialConfig] = {}
        for _ in range(size):
            trial = self.study.ask()
            config = TrialConfig.from_params({**suggest_params(self.search.params, trial), **trial.params},
                                             **self.settings)
            trial_id = trial.user_attrs.get(RERUN_OF) or (self.free.pop(0) if self.free else
                                                          self.tracker.unused_id("batched"))
            record = self.tracker.trial_started(trial_id, config.to_params())
            self.progress.trial_started(record.name)
            members[trial_id] = _Member(trial, trial_id, record.name, self.model_root / trial_id, config,
                                        replayed=record.epochs)
            configs[trial_id] = config
        worker.start(configs)
        return members

    def _train(self, wave: list[tuple[Any, dict[str, _Member]]]) -> None:
        """Epoch after epoch until every member of every population of the wave has ended."""
        stops: list[dict[str, str]] = [{} for _ in wave]
        ending: list[dict[str, str]] = [{} for _ in wave]  # id -> why, of members stopped by the last epoch
        while any(members for _, members in wave):
            for (worker, _), stop in zip(wave, stops, strict=True):
                worker.send(stop)
            for index, (worker, members) in enumerate(wave):  # a fixed order: the same decisions every run
                saved, results, failed = worker.receive()
                for trial_id, why in ending[index].items():
                    self._end(members.pop(trial_id), why, saved.get(trial_id, {}))
                stops[index], ending[index] = {}, {}
                for trial_id, error in failed.items():
                    self._fail(members.pop(trial_id), error)
                for trial_id, member in members.items():
                    if trial_id in results and (why := self._epoch(member, results[trial_id])) is not None:
                        stops[index][trial_id], ending[index][trial_id] = str(member.model_dir), why

    def _epoch(self, member: _Member, metrics: dict[str, float]) -> str | None:
        """Track one epoch of a member and decide: None (it goes on), or why it ends (:data:`NORMAL`,
        :data:`PRUNED`, or the search's reason to end)."""
        epoch = int(metrics["epoch"])
        value = metrics[self.metric]
        member.state = early_stopping(member.state, value, member.config)  # train.fit's rule, member by member
        early = member.early_stopped = stops_early(member.state, member.config)
        if early:
            metrics = {**metrics, "early_stopped": 1}
        self.tracker.epoch_reported(member.trial_id, metrics)
        record = self.tracker.records[member.trial_id]
        self.progress.epoch(member.name, record.epochs, record.metrics)
        member.trial.report(value, epoch)
        reason = self.ending.epoch(value)
        last = early or epoch >= self.search.max_epochs
        if epoch <= member.replayed and not last:
            return None
        if member.trial.should_prune():
            return PRUNED
        return NORMAL if last else reason

    def _end(self, member: _Member, why: str, files: dict[str, bytes]) -> None:
        for file_name, content in files.items():  # a model that came back from an actor
            member.model_dir.mkdir(parents=True, exist_ok=True)
            (member.model_dir / file_name).write_bytes(content)
        record = self.tracker.trial_ended(member.trial_id, model_dir=str(member.model_dir),
                                          early_stopped=member.early_stopped,
                                          stop_reason=None if why in (NORMAL, PRUNED) else why)
        value = record.metrics.get(self.metric)
        if why == PRUNED:
            self.study.tell(member.trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(member.trial, value)
        self.ending.trial_ended(record)
        self.progress.trial_ended(record.name, record.status, record.epochs, record.value(self.metric), record.error)

    def _fail(self, member: _Member, error: str) -> None:
        record = self.tracker.trial_ended(member.trial_id, error=error)
        self.study.tell(member.trial, state=optuna.trial.TrialState.FAIL)
        self.progress.trial_ended(record.name, record.status, record.epochs, record.metrics.get(self.metric),
                                  record.error)


def _cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit, where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------ workers
class _InProcess:
    """A worker in this process, behind the same send / receive as an actor."""

    def __init__(self, worker: PopulationWorker) -> None:
        self.worker, self.pending = worker, None

    def start(self, configs: dict[str, TrialConfig]) -> None:
        self.worker.start(configs)

    def send(self, stop: dict[str, str]) -> None:
        self.pending = stop

    def receive(self) -> StepResult:
        return self.worker.step(self.pending)

    def close(self) -> None:
        pass


class _OnRay:
    """A Ray actor holding one population at a time; an epoch is one call, answered while the others train."""

    def __init__(self, actor: Any) -> None:
        self.actor, self.pending = actor, None

    def start(self, configs: dict[str, TrialConfig]) -> None:
        self.actor.start.remote(configs)  # an actor runs its calls in order: no need to wait

    def send(self, stop: dict[str, str]) -> None:
        self.pending = self.actor.step.remote(stop)

    def receive(self) -> StepResult:
        import ray

        return ray.get(self.pending)

    def close(self) -> None:
        import ray

        ray.kill(self.actor)


def _ray_workers(search: Search, data: Dataset, file: DataFile | None, threads: int) -> list[_OnRay]:
    """One actor per slot of the Ray cluster (its CPUs and GPUs divided by a trial's), each with a trial's
    resources, the data read from ``file`` on one machine, shipped once through Ray's object store otherwise
    (see :mod:`hpsearch.execution.shipping`)."""
    import ray

    resources = search.resources
    count = min(parallel_slots(resources), search.num_samples or parallel_slots(resources))
    actor_class = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"])(PopulationWorker)
    shared = file or ray.put(data.for_trials())
    device = "cuda" if resources["gpu"] > 0 else "cpu"
    return [_OnRay(actor_class.remote(shared, device=device, threads=threads)) for _ in range(count)]

"""The worker side of the batched executor: one population at a time, an epoch per call.

Kept apart from :mod:`hpsearch.execution.batched` so that a Ray actor that runs it imports torch and the training
code only (no Optuna, no tracking): the same class runs in the driver (in-process) and as a Ray actor (populations
on Ray).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hpsearch.data.dataset import Dataset
from hpsearch.execution.shipping import DataFile, received
from hpsearch.training.fit import TrialConfig
from hpsearch.training.population import Population

__all__ = ["PopulationWorker", "StepResult"]

#: (models of the members stopped before this step: id -> {file name: bytes}, or {} when written in place;
#:  metrics of this epoch: id -> metrics; members that failed in this epoch: id -> error text)
StepResult = tuple[dict[str, dict[str, bytes]], dict[str, dict[str, float]], dict[str, str]]


class PopulationWorker:
    """Holds one population of the search (a new one per :meth:`start`) and trains it an epoch per :meth:`step`.

    Args:
        data: the trials' data (:meth:`Dataset.for_trials`).
        device: ``"cuda"`` when the trial resources ask for a GPU and one is here, else ``"cpu"``.
        threads: torch's intra-op threads, as a trial with these CPUs gets.
        groups_at_once: stacks of the population trained at once, on threads of their own (the slots of this
            machine, in-process; 1 in an actor, which has one trial's resources).
        write_here: models are written straight to the paths the driver names (same machine); otherwise their
            files come back as bytes, for the driver to write (an actor on another node).
    """

    def __init__(self, data: Dataset | DataFile, *, device: str = "cpu", threads: int = 1, write_here: bool = False,
                 groups_at_once: int = 1) -> None:
        torch.set_num_threads(threads)
        self.groups_at_once = groups_at_once
        self.data = received(data)
        self.device = device if device == "cpu" or torch.cuda.is_available() else "cpu"
        self.write_here = write_here
        self.population: Population | None = None

    def start(self, configs: dict[str, TrialConfig]) -> None:
        """A new population (the previous one, all of whose members have ended, is dropped)."""
        self.population = Population(configs, self.data, device=self.device, threads=self.groups_at_once)

    def step(self, stop: dict[str, str]) -> StepResult:
        """Save and remove the members in ``stop`` (id -> model folder), then train one epoch of the rest.

        One call (one round trip for an actor) per epoch: the driver's decisions on the last epoch travel with
        the request for the next one.
        """
        population = self.population
        saved = {member_id: self._save(member_id, Path(folder)) for member_id, folder in stop.items()}
        population.remove(list(stop))
        if not population.members:
            return saved, {}, {}
        failed_before = set(population.failed)
        results = population.train_epoch()
        failed = {k: v for k, v in population.failed.items() if k not in failed_before}
        return saved, results, failed

    def _save(self, member_id: str, folder: Path) -> dict[str, bytes]:
        if self.write_here:
            self.population.save(member_id, folder)
            return {}
        with tempfile.TemporaryDirectory() as directory:
            self.population.save(member_id, Path(directory))
            return {path.name: path.read_bytes() for path in Path(directory).iterdir()}

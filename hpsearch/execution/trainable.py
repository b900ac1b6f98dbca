"""The Ray Tune trainable: the shared training function, reporting to Ray Tune a few times a trial.

Ray starts a worker process for each trial actor, and the worker imports the module of the function it runs:
this one imports only torch and the training code, not the driver's modules (MLflow, scikit-learn, pandas,
plotting), which cost about 3 s of CPU more per worker on 2 cores.

A report to Ray Tune is a round trip through the driver (the trial waits until Tune has handled it) and a
checkpoint is a model saved and copied into Tune's storage: per epoch of a small network, they cost more than the
epoch itself (measured: 25 ms an epoch with a checkpoint, 3 ms without, against 33 ms of training). So a trial
(:class:`Reporter`) reports the epochs it trained since its last report all at once (under :data:`EARLIER_KEY`,
unpacked by the driver's tracking callback), about once a second, and saves a checkpoint only where one is needed:
at the epochs where ASHA decides (a stopped trial's model is that epoch's), at its last epoch, and every
:data:`CHECKPOINT_EVERY_S` seconds for a resume after a kill or a failure.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from hpsearch.loading import imports_without_gc

with imports_without_gc():  # a Ray worker loads torch here: 0.35 s of its CPU went to the collector
    import torch

    from hpsearch.data.dataset import Dataset
    from hpsearch.training.fit import TrialConfig, fit

__all__ = ["CHECKPOINT_EVERY_S", "EARLIER_KEY", "ENDED_MS_KEY", "NODE_ID_KEY", "REPORT_EVERY_S", "Reporter",
           "decision_epochs", "epochs_of", "ray_trial"]

NODE_ID_KEY = "hpsearch_node_id"  # what a trial adds to its reports: Ray's id of the node it runs on
EARLIER_KEY = "hpsearch_earlier_epochs"  # the epochs a report carries before its own, oldest first
ENDED_MS_KEY = "hpsearch_epoch_ended_ms"  # when an epoch ended (Unix ms): its MLflow timestamp, not the report's
REPORT_EVERY_S = 1.0  # the longest a trained epoch waits before it reaches the driver (the live display)
CHECKPOINT_EVERY_S = 5.0  # the most training a kill or a worker's failure costs a running trial


def ray_trial(config: dict[str, Any], data: Dataset, settings: dict[str, Any]) -> None:
    """One Ray Tune trial: ``config`` from the searcher, ``data`` and ``settings`` from ``tune.with_parameters``."""
    import ray
    from ray import tune

    torch.set_num_threads(settings["threads"])
    device = "cuda" if settings["gpu"] and torch.cuda.is_available() else "cpu"
    trial_config = TrialConfig.from_params(config, **settings["train"])

    node_id = ray.get_runtime_context().get_node_id()  # the node's identity; hostname and IP Tune adds itself

    def send(metrics: dict[str, Any], save: Callable[[Path], None] | None) -> None:
        if save is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save(Path(directory))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    report = Reporter(send, node_id=node_id, last_epoch=trial_config.max_epochs,
                      decision_epochs=settings["decision_epochs"], end=settings.get("end"))
    checkpoint = tune.get_checkpoint()
    try:
        if checkpoint is None:
            fit(trial_config, data, report, device=device)
        else:
            with checkpoint.as_directory() as directory:
                fit(trial_config, data, report, device=device, resume_from=Path(directory))
    except Exception:
        report.flush()  # a failing trial's epochs before the failure (a NaN loss) still reach MLflow
        raise


class Reporter:
    """``fit``'s report callback for a Ray trial: batches epochs into reports, and checkpoints where needed.

    ``send(metrics, save)`` reports to Ray Tune (``save`` writes a checkpoint, or is None). A report with a
    checkpoint goes out at every epoch in ``decision_epochs`` (where ASHA decides: each decision is taken on
    exactly that epoch, as with a report per epoch), at the trial's last epoch (``last_epoch``, or the epoch
    early stopping ends it at) and once :data:`CHECKPOINT_EVERY_S` has passed since the last checkpoint; one
    without, once :data:`REPORT_EVERY_S` has passed since the last report.

    ``end``: how the search may end before its trials do (:class:`~hpsearch.execution.stopping.Ending`): its time
    budget's end (``deadline``, a Unix time) and its ``goal`` (with ``metric`` and ``mode``). Then every report
    carries a checkpoint, so that Tune may stop the trial at any report with its model of that epoch, and the
    first epoch past the deadline, or that reaches the goal, is reported at once.
    """

    def __init__(self, send: Callable[[dict[str, Any], Callable[[Path], None] | None], None], *, node_id: str,
                 last_epoch: int, decision_epochs: Collection[int], clock: Callable[[], float] = time.monotonic,
                 end: dict[str, Any] | None = None):
        self.send = send
        self.node_id = node_id
        self.last_epoch = last_epoch
        self.decision_epochs = frozenset(decision_epochs)
        self.clock = clock
        self.end = end
        self.pending: list[dict[str, float]] = []
        self.reported = self.checkpointed = clock()

    def __call__(self, metrics: dict[str, float], save: Callable[[Path], None]) -> None:
        self.pending.append({**metrics, ENDED_MS_KEY: int(time.time() * 1000)})
        now = self.clock()
        epoch = int(metrics["epoch"])
        checkpoint = (epoch >= self.last_epoch or bool(metrics.get("early_stopped")) or epoch in self.decision_epochs
                      or now - self.checkpointed >= CHECKPOINT_EVERY_S or self._search_ends(metrics))
        if checkpoint or now - self.reported >= REPORT_EVERY_S:
            self._send(save if checkpoint or self.end else None)

    def _search_ends(self, metrics: dict[str, float]) -> bool:
        """Whether this epoch is past the search's time budget or reaches its goal."""
        if not self.end:
            return False
        deadline, goal = self.end.get("deadline"), self.end.get("goal")
        value = metrics.get(self.end.get("metric", ""))
        reached = goal is not None and value is not None and (value <= goal if self.end["mode"] == "min"
                                                              else value >= goal)
        return reached or (deadline is not None and time.time() >= deadline)

    def flush(self) -> None:
        """Report the epochs not reported yet, without a checkpoint."""
        if self.pending:
            self._send(None)

    def _send(self, save: Callable[[Path], None] | None) -> None:
        *earlier, metrics = self.pending
        self.pending = []
        self.send({**metrics, NODE_ID_KEY: self.node_id, EARLIER_KEY: earlier}, save)
        self.reported = self.clock()
        if save is not None:
            self.checkpointed = self.reported


def epochs_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every epoch a trial's report carries, oldest first: the earlier ones, then the report's own."""
    return [*result.get(EARLIER_KEY, ()), result]


def decision_epochs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which Ray Tune's ASHA decides whether a trial goes on.

    Its rungs are at ``grace_period * reduction_factor**k`` epochs (``async_hyperband._Bracket``: every ``k`` with
    a rung not beyond ``max_epochs``), and a trial's rung is decided on its first result at or past the rung: the
    next whole epoch. One rung beyond Ray's count, where floating point rounds the other way, costs one checkpoint.
    """
    epochs = []
    k = 0
    while grace_period * reduction_factor**k <= max_epochs * (1 + 1e-9):
        epochs.append(math.ceil(grace_period * reduction_factor**k))
        k += 1
    return epochs

"""The one training function every trial runs (:func:`fit`), the epoch-by-epoch trainer it drives
(:class:`Trainer`), and the evaluation it shares with the final test report.

It imports neither Ray nor MLflow: it takes a config, the data and a ``report`` callback, so it runs on its
own in a test in seconds; the Ray executor passes in a callback that reports to Ray Tune, a few epochs at a
time, and saves a checkpoint only where one is needed (:mod:`hpsearch.execution.trainable`).
The loop slices in-memory tensors (shuffled once per epoch) instead of using a DataLoader, and steps with torch's
fused optimizer kernels called directly (:mod:`hpsearch.training.optim`): at the sizes we search, per-batch Python
overhead, not arithmetic, is what costs.

A trial's model is its best epoch's: the trainer keeps a copy of the weights of the epoch with the best value of
the search's metric so far (a copy in memory costs little at these sizes), and that is the model it saves and
returns. Its checkpoints also hold the current weights, so that a resumed trial goes on from where it was.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hpsearch.data.dataset import Dataset, Split
from hpsearch.errors import NonFiniteLossError
from hpsearch.model.encoding import NumericEncoding, from_units
from hpsearch.model.folds import FoldAverage, average_spec
from hpsearch.model.network import SPEC_FILE, WEIGHTS_FILE, ModelSpec, save_model, save_tensors
from hpsearch.training.config import TrialConfig, make_model, metric_names, model_spec, training_target_units
from hpsearch.training.optim import lr_factor, make_optimizer

__all__ = ["BEST_EPOCH", "FoldTrainer", "Trainer", "TrialConfig", "early_stopping", "evaluate", "fit", "metric_names",
           "model_spec", "stops_early"]

TRAIN_STATE_FILE = "train_state.pt"
EVAL_BATCH = 8192
#: The key of an epoch's report that names the trial's best epoch so far (its model is that epoch's).
BEST_EPOCH = "best_epoch"

#: ``report(metrics, save)``: ``save(directory)`` writes a checkpoint there, if the caller wants one.
ReportFn = Callable[[dict[str, float], Callable[[Path], None]], None]


class _Epochs:
    """What a trainer keeps from one epoch to the next: the epoch reached, the best one and its weights, the
    epochs without improvement (early stopping). :class:`Trainer` and :class:`FoldTrainer` share it."""

    config: TrialConfig
    state: dict[str, Any]
    best_weights: Any

    @property
    def epoch(self) -> int:
        return self.state["epoch"]

    def done(self) -> bool:
        """Whether the trial has trained its last epoch (its budget, or early stopping ended it)."""
        return self.state["epoch"] >= self.config.max_epochs or stops_early(self.state, self.config)

    def _epoch_ended(self, metrics: dict[str, float], best_weights: Callable[[], Any]) -> dict[str, float]:
        """Record an epoch's ``metrics`` (``train_loss``, ``val_...``); ``best_weights`` copies the weights when
        the epoch is the best so far. Returns the epoch's metrics with ``epoch``, :data:`BEST_EPOCH` and
        ``early_stopped`` when early stopping ends the trial here."""
        epoch = self.state["epoch"] + 1
        state = early_stopping(self.state, metrics[self.config.metric], self.config)
        if state["bad_epochs"] == 0:  # improved: this epoch is the best so far
            state[BEST_EPOCH] = epoch
            self.best_weights = best_weights()
        self.state = {**state, "epoch": epoch, "train_loss": metrics["train_loss"]}
        metrics = {"epoch": epoch, **metrics, BEST_EPOCH: state[BEST_EPOCH]}
        if stops_early(self.state, self.config):
            metrics["early_stopped"] = 1
        return metrics


class Trainer(_Epochs):
    """One trial's model, optimizer and data, trained one epoch per :meth:`train_epoch` call.

    It keeps the weights of its best epoch (by ``config.metric`` and ``config.mode``) and counts the epochs
    without improvement (early stopping). It owns its random state (torch's global generator, seeded with
    ``config.seed`` as a trial seeds it, is swapped in around its own work and out again), so that a caller may
    step several trainers in turn (the folds of a cross-validation) and each computes what it computes alone;
    :func:`fit` is the loop around one.
    """

    def __init__(self, config: TrialConfig, data: Dataset, *, device: str = "cpu") -> None:
        self.config, self.data, self.device = config, data, device
        with self._own_random_state(seed=config.seed):
            self.spec = model_spec(config, data)
            self.model = make_model(config, self.spec, data).to(device)
        self.optimizer = make_optimizer(config.optimizer, self.model, lr=config.lr, weight_decay=config.weight_decay,
                                        momentum=config.momentum, beta2=config.adam_beta2)
        self.loss_fn = _loss_function(data.task, config.label_smoothing)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.code = config.user_model.code if config.user_model is not None else None
        # The numeric encoding has no trained weights: the training rows are encoded once, not every batch.
        fixed = isinstance(self.model, nn.Sequential) and len(self.model) and isinstance(self.model[0], NumericEncoding)
        self.trained = self.model[1:] if fixed else self.model
        X, _ = _tensors(data.train, device)
        with torch.no_grad():
            self.X = self.model[0](X) if fixed else X
        self.y = torch.as_tensor(training_targets(data, self.spec, config.label_smoothing), device=device)
        self.steps_per_epoch = math.ceil(len(self.X) / config.batch_size)
        self.state: dict[str, Any] = {"epoch": 0, "best": None, "bad_epochs": 0, BEST_EPOCH: 0, "step": 0}
        self.best_weights: dict[str, torch.Tensor] | None = None

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch and evaluate it on the validation split: the epoch's metrics, with :data:`BEST_EPOCH`
        (and ``early_stopped`` when early stopping ends the trial here). Raises :class:`NonFiniteLossError`."""
        with self._own_random_state():
            train_loss = self._train_one_epoch()
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(f"training loss became {train_loss} at epoch {self.epoch + 1} "
                                     f"(lr={self.config.lr:g})")
        metrics = {"train_loss": train_loss, **evaluate(self.model, self.data.val, self.spec, prefix="val_")}
        return self._epoch_ended(metrics, lambda: _weights_of(self.model))

    def _train_one_epoch(self) -> float:
        """One pass over shuffled mini-batches; returns the mean training loss.

        The data is shuffled with one gather per epoch, so that each batch is a slice (a view), not a gather.
        """
        model, optimizer, config = self.trained, self.optimizer, self.config
        model.train()
        task_squeeze = self.y.dtype != torch.long
        order = torch.randperm(len(self.X), generator=self.generator).to(self.X.device)
        X, y = self.X[order], self.y[order]
        total = torch.zeros((), device=X.device)
        scheduled = config.lr_schedule != "constant"
        steps = config.max_epochs * self.steps_per_epoch
        for start in range(0, len(X), config.batch_size):
            xb, yb = X[start : start + config.batch_size], y[start : start + config.batch_size]
            out = model(xb)
            loss = self.loss_fn(out.squeeze(1) if task_squeeze else out, yb)
            if scheduled:
                optimizer.lr = config.lr * lr_factor(config.lr_schedule, self.state["step"], steps)
            optimizer.step(loss)
            self.state["step"] += 1
            total += loss.detach() * len(xb)
        return total.item() / len(X)

    @contextlib.contextmanager
    def _own_random_state(self, seed: int | None = None) -> Iterator[None]:
        """Run with the trainer's state of torch's global generator (the one dropout draws from), seeded first
        with ``seed``; the caller's state is left as it was."""
        cuda = torch.device(self.device).type == "cuda"
        with torch.random.fork_rng(devices=[torch.device(self.device)] if cuda else []):
            if seed is not None:
                torch.manual_seed(seed)
            else:
                torch.set_rng_state(self.rng[0])
                if cuda:
                    torch.cuda.set_rng_state(self.rng[1], self.device)
            yield
            self.rng = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None)

    def validate(self) -> dict[str, float]:
        """The model's metrics on the validation rows, as an epoch reports them (``val_loss``, ...)."""
        return evaluate(self.model, self.data.val, self.spec, prefix="val_")

    def best_model(self) -> nn.Module:
        """A copy of the model with its best epoch's weights."""
        model = copy.deepcopy(self.model)
        if self.best_weights is not None:
            model.load_state_dict(self.best_weights)
        return model

    def save(self, directory: Path, state: dict[str, Any] | None = None) -> None:
        """A checkpoint: the best epoch's model (weights + spec, the space file's code for its own model) and what
        resuming needs (the current weights, optimizer, RNG, early stopping)."""
        save_model(self.model, self.spec, directory, code=self.code, weights=self.best_weights)
        save_tensors({**(self.state if state is None else state),
                      "weights": self.model.state_dict(),
                      "optimizer": self.optimizer.state_dict(),
                      "generator": self.generator.get_state(),
                      "torch_rng": self.rng[0]},
                     directory / TRAIN_STATE_FILE)

    def restore(self, directory: Path) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        best = torch.load(directory / WEIGHTS_FILE, map_location=self.device, weights_only=True)
        saved = torch.load(directory / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
        self.model.load_state_dict(saved.pop("weights", best))  # a checkpoint without them: the best were the last
        self.best_weights = best
        self.optimizer.load_state_dict(saved.pop("optimizer"))
        self.generator.set_state(saved.pop("generator"))
        self.rng = (saved.pop("torch_rng"), self.rng[1])
        self.state = {BEST_EPOCH: saved.get("epoch", 0), "step": saved.get("epoch", 0) * self.steps_per_epoch,
                      **saved}


class FoldTrainer(_Epochs):
    """A cross-validated trial (``config.cv`` folds): a :class:`Trainer` per fold of the training rows, stepped
    together an epoch at a time, with :class:`Trainer`'s interface.

    An epoch's metrics are the mean over the folds of each fold's metrics on its own held-out rows, so that the
    searcher, ASHA and early stopping judge the trial on every training row. The trial's model is the average of
    the folds' models (:class:`hpsearch.model.folds.FoldAverage`), each at the epoch whose mean was best.
    """

    def __init__(self, config: TrialConfig, data: Dataset, *, device: str = "cpu") -> None:
        self.config, self.data = config, data
        self.trainers = [Trainer(replace(config, seed=config.seed + i), fold, device=device)
                         for i, fold in enumerate(data.folds(config.cv, config.seed))]
        self.spec = average_spec([t.spec for t in self.trainers], data.target_mean, data.target_std)
        self.state: dict[str, Any] = {"epoch": 0, "best": None, "bad_epochs": 0, BEST_EPOCH: 0}
        self.best_weights: list[dict[str, torch.Tensor]] | None = None

    def train_epoch(self) -> dict[str, float]:
        """One epoch of every fold: the mean of the folds' metrics, with :data:`BEST_EPOCH`; the best epoch is
        the one whose mean was best, and its weights are every fold's of that epoch."""
        folds = [trainer.train_epoch() for trainer in self.trainers]
        metrics = {key: float(np.mean([fold[key] for fold in folds])) for key in folds[0]
                   if key not in ("epoch", BEST_EPOCH, "early_stopped")}
        return self._epoch_ended(metrics, lambda: [_weights_of(t.model) for t in self.trainers])

    def validate(self) -> dict[str, float]:
        folds = [trainer.validate() for trainer in self.trainers]
        return {key: float(np.mean([fold[key] for fold in folds])) for key in folds[0]}

    @property
    def model(self) -> nn.Module:
        """The average of the folds' models as they are now."""
        return FoldAverage([t.model for t in self.trainers], [t.spec for t in self.trainers], self.spec)

    def best_model(self) -> nn.Module:
        """The average of the folds' models at the best epoch."""
        models = [copy.deepcopy(t.model) for t in self.trainers]
        for model, weights in zip(models, self.best_weights or [], strict=False):
            model.load_state_dict(weights)
        return FoldAverage(models, [t.spec for t in self.trainers], self.spec)

    def save(self, directory: Path, state: dict[str, Any] | None = None) -> None:
        """The average of the best epoch's folds as the trial's model, and each fold's checkpoint beside it
        (``fold_0/``, ...) with the trial's own state, to resume from."""
        save_model(self.best_model(), self.spec, directory, code=self.trainers[0].code)
        for i, trainer in enumerate(self.trainers):
            trainer.save(directory / f"fold_{i}")
        save_tensors(self.state if state is None else state, directory / TRAIN_STATE_FILE)

    def restore(self, directory: Path) -> None:
        for i, trainer in enumerate(self.trainers):
            trainer.restore(directory / f"fold_{i}")
        average = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        self.best_weights = [{k.split(".", 2)[2]: v for k, v in average.items() if k.startswith(f"members.{i}.")}
                             for i in range(len(self.trainers))]
        self.state = torch.load(directory / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)


def fit(
    config: TrialConfig,
    data: Dataset,
    report: ReportFn,
    *,
    device: str = "cpu",
    resume_from: Path | None = None,
) -> nn.Module:
    """Train for up to ``config.max_epochs`` epochs, calling ``report`` after each one; returns the model of the
    best epoch.

    Raises :class:`NonFiniteLossError` when the training loss becomes NaN or infinite. Stops early when the
    search's metric has not improved for ``early_stopping_patience`` epochs (the last report then carries
    ``early_stopped=1``). With ``resume_from`` (a checkpoint directory) it continues where that left off.
    """
    trainer = (FoldTrainer if config.cv > 1 else Trainer)(config, data, device=device)
    if resume_from is not None:
        trainer.restore(resume_from)
        if trainer.done():
            # The checkpoint of the trial's last epoch, and the kill came before its end was recorded: that
            # epoch is reported again (its metrics are the same), instead of training past the trial's end.
            state = trainer.state
            metrics = {"epoch": state["epoch"], "train_loss": state.get("train_loss", math.nan),
                       **trainer.validate(), BEST_EPOCH: state[BEST_EPOCH]}
            report({**metrics, "early_stopped": 1} if stops_early(state, config) else metrics,
                   functools.partial(trainer.save, state=dict(state)))
            return trainer.best_model()
    while not trainer.done():
        metrics = trainer.train_epoch()
        report(metrics, functools.partial(trainer.save, state=dict(trainer.state)))
    return trainer.best_model()


def _weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights (a best epoch's, kept in memory)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def stops_early(state: dict[str, Any], config: TrialConfig) -> bool:
    """Whether early stopping ends the trial after the epoch ``state`` holds (``fit`` and the batched executor)."""
    return config.early_stopping_patience is not None and state["bad_epochs"] >= config.early_stopping_patience


def early_stopping(state: dict[str, Any], value: float, config: TrialConfig) -> dict[str, Any]:
    """``state`` (``best``, ``bad_epochs``) after an epoch whose search metric is ``value``."""
    best = state["best"]
    improved = best is None or (value < best if config.mode == "min" else value > best)
    return {**state, "best": value if improved else best, "bad_epochs": 0 if improved else state["bad_epochs"] + 1}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, spec: ModelSpec, *, prefix: str = "") -> dict[str, float]:
    """Loss and the task's metrics on one split: accuracy, or RMSE and MAE in the target's units.

    The loss is what the search compares trials by, whatever each one trained on: the cross-entropy without
    label smoothing, and for a regression the squared error of the standardised target (a network that learns
    ``log1p`` of it is read back in the target's units first).
    """
    model.eval()
    device = next(model.parameters()).device
    X, y = _tensors(split, device)
    outputs = torch.cat([model(X[i : i + EVAL_BATCH]) for i in range(0, len(X), EVAL_BATCH)])
    if spec.task == "regression":
        if spec.target_transform == "none":
            scaled_error = outputs.squeeze(1) - y
        else:  # in the target's units, standardised as the target is: comparable with the other trials'
            scaled_error = (spec.to_units(outputs.squeeze(1).double()) - spec.target_mean) / spec.target_std - y
        error = scaled_error * spec.target_std
        result = {"loss": scaled_error.pow(2).mean().item(), "rmse": error.pow(2).mean().sqrt().item(),
                  "mae": error.abs().mean().item()}
    else:
        result = {"loss": _loss_function(spec.task)(_squeeze(outputs, spec.task), y).item()}
        predicted = (outputs.squeeze(1) > 0).float() if spec.task == "binary" else outputs.argmax(1)
        result["accuracy"] = (predicted == y).float().mean().item()
    return {f"{prefix}{k}": v for k, v in result.items()}


def training_targets(data: Dataset, spec: ModelSpec, label_smoothing: float = 0.0) -> np.ndarray:
    """The targets a trial trains on: the standardised (transformed) regression target, class indices, or the
    probability of the positive class (0/1, or smoothed with ``label_smoothing``, as torch smooths two classes)."""
    y = data.train.y
    if data.task == "regression" and spec.target_transform != "none":
        scaled = from_units(training_target_units(data), spec.target_transform)
        return ((scaled - spec.transform_mean) / spec.transform_std).astype(y.dtype)
    if data.task == "binary" and label_smoothing > 0:
        return (y * (1 - label_smoothing) + label_smoothing / 2).astype(y.dtype)
    return y


def is_complete_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a whole checkpoint (a kill can cut one while it is being copied)."""
    try:
        json.loads((directory / SPEC_FILE).read_text())
        torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        torch.load(directory / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing, cut short or unreadable: not a checkpoint to resume from
        return False
    return True


# ------------------------------------------------------------------------------------------------- helpers
def _loss_function(task: str, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of a task; with ``label_smoothing``, torch's for classes (a binary target is smoothed instead:
    :func:`training_targets`)."""
    if task == "multiclass":
        return functools.partial(F.cross_entropy, label_smoothing=label_smoothing)
    return {"binary": F.binary_cross_entropy_with_logits, "regression": F.mse_loss}[task]


def _squeeze(outputs: torch.Tensor, task: str) -> torch.Tensor:
    return outputs if task == "multiclass" else outputs.squeeze(1)


def _tensors(split: Split, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(split.X, device=device), torch.as_tensor(split.y, device=device)

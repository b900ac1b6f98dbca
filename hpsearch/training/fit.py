"""The one training function every trial runs, and the evaluation it shares with the final test report.

It imports neither Ray nor MLflow: it takes a config, the data and a ``report`` callback, so it runs on its
own in a test in seconds; the Ray executor passes in a callback that reports to Ray Tune, a few epochs at a
time, and saves a checkpoint only where one is needed (:mod:`hpsearch.execution.trainable`).
The loop slices in-memory tensors (shuffled once per epoch) instead of using a DataLoader, and steps with torch's
fused optimizer kernels called directly (:mod:`hpsearch.training.optim`): at the sizes we search, per-batch Python
overhead, not arithmetic, is what costs.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpsearch.data.dataset import Dataset, Split
from hpsearch.errors import NonFiniteLossError
from hpsearch.model.network import SPEC_FILE, WEIGHTS_FILE, ModelSpec, build_model, save_model
from hpsearch.model.user_model import UserModel
from hpsearch.space import DEFAULT_PARAMS, TRAINING_PARAMS, decode_sizes
from hpsearch.training.optim import Optimizer, make_optimizer

__all__ = ["TrialConfig", "early_stopping", "evaluate", "fit", "metric_names", "model_spec", "stops_early"]

TRAIN_STATE_FILE = "train_state.pt"
EVAL_BATCH = 8192

#: ``report(metrics, save)``: ``save(directory)`` writes a checkpoint there, if the caller wants one.
ReportFn = Callable[[dict[str, float], Callable[[Path], None]], None]


@dataclass(frozen=True)
class TrialConfig:
    """A trial's full effective configuration: its hyperparameters and the search's training settings.

    With the space file's own model (``user_model``), ``model_params`` holds every value but the training
    function's own (``layers`` as a list of widths), and ``hidden_sizes``, ``dropout`` and ``activation`` are unused.
    """

    hidden_sizes: tuple[int, ...]
    lr: float = DEFAULT_PARAMS["lr"]
    dropout: float = DEFAULT_PARAMS["dropout"]
    weight_decay: float = DEFAULT_PARAMS["weight_decay"]
    batch_size: int = DEFAULT_PARAMS["batch_size"]
    optimizer: str = DEFAULT_PARAMS["optimizer"]
    momentum: float = DEFAULT_PARAMS["momentum"]
    activation: str = DEFAULT_PARAMS["activation"]
    max_epochs: int = 30
    seed: int = 0
    early_stopping_patience: int | None = None
    metric: str = "val_loss"
    mode: str = "min"
    model_params: dict[str, Any] = field(default_factory=dict)
    user_model: UserModel | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **settings: Any) -> TrialConfig:
        """Build from a trial's sampled params (``n_layers``/``units_i`` or ``layers``) plus the settings."""
        params = dict(params)
        if settings.get("user_model") is not None:
            return cls._of_user_model(params, settings)
        layers = params.pop("layers", DEFAULT_PARAMS["layers"])
        if "n_layers" in params:
            n_layers = int(params.pop("n_layers"))
            hidden = [int(params.pop(f"units_{i}")) for i in range(n_layers)]
        else:
            hidden = decode_sizes(layers) if isinstance(layers, str) else list(layers)
        for key in [k for k in params if k.startswith("units_")]:
            params.pop(key)  # widths of layers a shallower trial does not have
        known = {k: v for k, v in {**params, **settings}.items() if k in cls.__dataclass_fields__}
        return cls(hidden_sizes=tuple(hidden), **known)

    @classmethod
    def _of_user_model(cls, params: dict[str, Any], settings: Mapping[str, Any]) -> TrialConfig:
        """The training function's own params as fields, every other value the model function's."""
        own = {k: params.pop(k) for k in TRAINING_PARAMS if k in params}
        if "n_layers" in params:
            params["layers"] = [int(params.pop(f"units_{i}")) for i in range(int(params.pop("n_layers")))]
        elif isinstance(params.get("layers"), str):
            params["layers"] = decode_sizes(params["layers"])
        model_params = {k: v for k, v in params.items() if not k.startswith("units_")}
        known = {k: v for k, v in settings.items() if k in cls.__dataclass_fields__}
        return cls(hidden_sizes=(), model_params=model_params, **own, **known)

    def model_config(self) -> dict[str, Any]:
        """What the space file's model function gets: the trial's values, the training function's included."""
        return {**{k: getattr(self, k) for k in TRAINING_PARAMS}, **self.model_params}

    def to_params(self) -> dict[str, Any]:
        """Flat params as MLflow shows them: ``n_layers``, ``units_0``, ... instead of a tuple."""
        if self.user_model is not None:
            skip = {"hidden_sizes", "dropout", "activation", "model_params", "user_model"}
            flat = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
            values = dict(self.model_params)
            sizes = values.pop("layers", None)
            if sizes is not None:
                flat.update(n_layers=len(sizes), **{f"units_{i}": u for i, u in enumerate(sizes)})
            return {**flat, **values}
        flat = {k: v for k, v in asdict(self).items() if k not in ("hidden_sizes", "model_params", "user_model")}
        flat["n_layers"] = len(self.hidden_sizes)
        flat.update({f"units_{i}": u for i, u in enumerate(self.hidden_sizes)})
        return flat


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics reported after every epoch for a task (besides ``epoch``)."""
    if task == "regression":
        return ("train_loss", "val_loss", "val_rmse", "val_mae")
    return ("train_loss", "val_loss", "val_accuracy")


def model_spec(config: TrialConfig, data: Dataset) -> ModelSpec:
    """What rebuilds the trained model: the MLP's shape, or the space file's function and the values it got."""
    user = None
    if config.user_model is not None:
        user = {"function": config.user_model.function, "space_file": Path(config.user_model.path).name,
                "config": config.model_config()}
    return ModelSpec(
        n_features=data.n_features,
        n_outputs=data.n_outputs,
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
        dropout=config.dropout,
        task=data.task,
        classes=list(data.classes),
        feature_names=list(data.feature_names),
        target_mean=data.target_mean,
        target_std=data.target_std,
        input_shape=data.input_shape,
        user_model=user,
    )


def make_model(config: TrialConfig, spec: ModelSpec, data: Dataset) -> nn.Module:
    """The network a trial trains: the space file's own (``model=``), else the MLP of ``spec``."""
    if config.user_model is not None:
        return config.user_model.build(config.model_config(), data.input_shape, data.n_outputs)
    return build_model(spec)


def fit(
    config: TrialConfig,
    data: Dataset,
    report: ReportFn,
    *,
    device: str = "cpu",
    resume_from: Path | None = None,
) -> nn.Module:
    """Train for up to ``config.max_epochs`` epochs, calling ``report`` after each one.

    Raises :class:`NonFiniteLossError` when the training loss becomes NaN or infinite. Stops early when the
    search's metric has not improved for ``early_stopping_patience`` epochs (the last report then carries
    ``early_stopped=1``). With ``resume_from`` (a checkpoint directory) it continues where that left off.
    """
    torch.manual_seed(config.seed)
    spec = model_spec(config, data)
    model = make_model(config, spec, data).to(device)
    optimizer = make_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay,
                               momentum=config.momentum)
    loss_fn = _loss_function(data.task)
    generator = torch.Generator().manual_seed(config.seed)
    X, y = _tensors(data.train, device)
    state = {"epoch": 0, "best": None, "bad_epochs": 0}
    code = config.user_model.code if config.user_model is not None else None
    save = functools.partial(_save, model=model, spec=spec, optimizer=optimizer, generator=generator, code=code)
    if resume_from is not None:
        state = _restore(resume_from, model, optimizer, generator, device)
        if state["epoch"] >= config.max_epochs or stops_early(state, config):
            # The checkpoint of the trial's last epoch, and the kill came before its end was recorded: that
            # epoch is reported again (its metrics are the same), instead of training past the trial's end.
            metrics = {"epoch": state["epoch"], "train_loss": state.get("train_loss", math.nan),
                       **evaluate(model, data.val, spec, prefix="val_")}
            report({**metrics, "early_stopped": 1} if stops_early(state, config) else metrics,
                   functools.partial(save, state=dict(state)))
            return model

    for epoch in range(state["epoch"] + 1, config.max_epochs + 1):
        train_loss = _train_one_epoch(model, optimizer, loss_fn, X, y, config.batch_size, generator)
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(f"training loss became {train_loss} at epoch {epoch} (lr={config.lr:g})")
        metrics = {"epoch": epoch, "train_loss": train_loss, **evaluate(model, data.val, spec, prefix="val_")}
        state = {**early_stopping(state, metrics[config.metric], config), "epoch": epoch, "train_loss": train_loss}
        stop = stops_early(state, config)
        if stop:
            metrics["early_stopped"] = 1
        report(metrics, functools.partial(save, state=dict(state)))
        if stop:
            break
    return model


def stops_early(state: dict[str, Any], config: TrialConfig) -> bool:
    """Whether early stopping ends the trial after the epoch ``state`` holds (``fit`` and the batched executor)."""
    return config.early_stopping_patience is not None and state["bad_epochs"] >= config.early_stopping_patience


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, spec: ModelSpec, *, prefix: str = "") -> dict[str, float]:
    """Loss and the task's metrics on one split: accuracy, or RMSE and MAE in the target's units."""
    model.eval()
    device = next(model.parameters()).device
    X, y = _tensors(split, device)
    outputs = torch.cat([model(X[i : i + EVAL_BATCH]) for i in range(0, len(X), EVAL_BATCH)])
    loss = _loss_function(spec.task)(_squeeze(outputs, spec.task), y).item()
    result = {"loss": loss}
    if spec.task == "regression":
        error = (outputs.squeeze(1) - y) * spec.target_std
        result.update(rmse=error.pow(2).mean().sqrt().item(), mae=error.abs().mean().item())
    else:
        predicted = (outputs.squeeze(1) > 0).float() if spec.task == "binary" else outputs.argmax(1)
        result["accuracy"] = (predicted == y).float().mean().item()
    return {f"{prefix}{k}": v for k, v in result.items()}


# ------------------------------------------------------------------------------------------------- helpers
def _train_one_epoch(
    model: nn.Module,
    optimizer: Optimizer,
    loss_fn: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """One pass over shuffled mini-batches; returns the mean training loss.

    The data is shuffled with one gather per epoch, so that each batch is a slice (a view), not a gather.
    """
    model.train()
    task_squeeze = y.dtype != torch.long
    order = torch.randperm(len(X), generator=generator).to(X.device)
    X, y = X[order], y[order]
    total = torch.zeros((), device=X.device)
    for start in range(0, len(X), batch_size):
        xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        out = model(xb)
        loss = loss_fn(out.squeeze(1) if task_squeeze else out, yb)
        optimizer.step(loss)
        total += loss.detach() * len(xb)
    return total.item() / len(X)


def _loss_function(task: str) -> nn.Module:
    return {"binary": nn.BCEWithLogitsLoss(), "multiclass": nn.CrossEntropyLoss(), "regression": nn.MSELoss()}[task]


def _squeeze(outputs: torch.Tensor, task: str) -> torch.Tensor:
    return outputs if task == "multiclass" else outputs.squeeze(1)


def _tensors(split: Split, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(split.X, device=device), torch.as_tensor(split.y, device=device)


def early_stopping(state: dict[str, Any], value: float, config: TrialConfig) -> dict[str, Any]:
    """``state`` (``best``, ``bad_epochs``) after an epoch whose search metric is ``value``."""
    best = state["best"]
    improved = best is None or (value < best if config.mode == "min" else value > best)
    return {**state, "best": value if improved else best, "bad_epochs": 0 if improved else state["bad_epochs"] + 1}


def _save(
    directory: Path,
    model: nn.Module,
    spec: ModelSpec,
    optimizer: Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
    code: str | None = None,
) -> None:
    """A checkpoint: the model (weights + spec, the space file's code for its own model) and what resuming needs
    (optimizer, RNG, early stopping)."""
    save_model(model, spec, directory, code=code)
    torch.save(
        {
            **state,
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        },
        directory / TRAIN_STATE_FILE,
    )


def is_complete_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a whole checkpoint (a kill can cut one while it is being copied)."""
    try:
        json.loads((directory / SPEC_FILE).read_text())
        torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        torch.load(directory / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing, cut short or unreadable: not a checkpoint to resume from
        return False
    return True


def _restore(
    directory: Path,
    model: nn.Module,
    optimizer: Optimizer,
    generator: torch.Generator,
    device: str,
) -> dict[str, Any]:
    model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location=device, weights_only=True))
    saved = torch.load(directory / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved.pop("optimizer"))
    generator.set_state(saved.pop("generator"))
    torch.set_rng_state(saved.pop("torch_rng"))
    return saved


"""STAND-IN for the vectorised population (helper "population" writes the real one; the lead takes that at merge).

The interface of ``notes/POPULATION_API.md``, implemented the slow and obviously correct way: each member is
the model, optimizer and shuffling generator ``train.fit`` would build, trained one after another, one epoch at
a time. Each member keeps its own copy of torch's global RNG (dropout draws from it), so its epochs are exactly
those ``train.fit`` computes for it alone. Nothing here is vectorised; :mod:`hpsearch.batched` uses only the
public interface.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hpsearch import train
from hpsearch.dataset import Dataset
from hpsearch.model import ModelSpec, build_model, save_model
from hpsearch.optim import Optimizer, make_optimizer
from hpsearch.train import TrialConfig, evaluate, model_spec

__all__ = ["Population", "group_key"]


def group_key(config: TrialConfig) -> tuple:
    """What cannot be vectorised: members with equal keys would train in one stacked model."""
    momentum = config.momentum if config.optimizer in ("sgd", "rmsprop") else None
    return (len(config.hidden_sizes), config.batch_size, config.optimizer, config.activation, momentum)


@dataclass
class _Member:
    config: TrialConfig
    spec: ModelSpec
    model: nn.Module
    optimizer: Optimizer
    generator: torch.Generator
    rng: torch.Tensor  # torch's global RNG state as this member left it
    epoch: int = 0


class Population:
    """Members (trials) trained together (here: one after another, each exactly as ``train.fit`` trains it)."""

    def __init__(self, configs: dict[str, TrialConfig], data: Dataset, *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.data, self.device, self.dtype = data, device, dtype
        self.members: list[str] = []
        self.failed: dict[str, str] = {}
        self._all: dict[str, _Member] = {}
        saved = torch.get_rng_state()
        for member_id, config in configs.items():
            torch.manual_seed(config.seed)
            spec = model_spec(config, data)
            model = build_model(spec).to(device=device, dtype=dtype)
            optimizer = make_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay,
                                       momentum=config.momentum)
            generator = torch.Generator().manual_seed(config.seed)
            self._all[member_id] = _Member(config, spec, model, optimizer, generator, torch.get_rng_state())
            self.members.append(member_id)
        torch.set_rng_state(saved)
        self._X = torch.as_tensor(data.train.X, device=device).to(dtype)
        y = torch.as_tensor(data.train.y, device=device)
        self._y = y if y.dtype == torch.long else y.to(dtype)

    def train_epoch(self) -> dict[str, dict[str, float]]:
        """One epoch for every active member: ``{id: metrics}`` as ``train.fit`` reports them."""
        results: dict[str, dict[str, float]] = {}
        saved = torch.get_rng_state()
        for member_id in list(self.members):
            member = self._all[member_id]
            torch.set_rng_state(member.rng)
            loss_fn = train._loss_function(self.data.task)
            loss = train._train_one_epoch(member.model, member.optimizer, loss_fn, self._X, self._y,
                                          member.config.batch_size, member.generator)
            member.rng = torch.get_rng_state()
            member.epoch += 1
            if not math.isfinite(loss):
                self.failed[member_id] = (f"training loss became {loss} at epoch {member.epoch} "
                                          f"(lr={member.config.lr:g})")
                self.members.remove(member_id)
                continue
            results[member_id] = {"epoch": member.epoch, "train_loss": loss,
                                  **evaluate(member.model, self.data.val, member.spec, prefix="val_")}
        torch.set_rng_state(saved)
        return results

    def remove(self, ids: Iterable[str]) -> None:
        """Stopped members leave the population (their last weights are kept)."""
        gone = set(ids)
        self.members = [m for m in self.members if m not in gone]

    def model(self, member_id: str) -> tuple[nn.Module, ModelSpec]:
        """The member's model on the CPU, as ``train.fit`` would hold it."""
        member = self._all[member_id]
        model = build_model(member.spec)
        model.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in
                               member.model.state_dict().items()})
        return model, member.spec

    def save(self, member_id: str, directory: Path) -> None:
        """The member's model, written as every trial's model is (:func:`hpsearch.model.save_model`)."""
        model, spec = self.model(member_id)
        save_model(model, spec, directory)

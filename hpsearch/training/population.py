"""Many trials trained at once: a population of MLPs as one stacked model, for the batched executor (issue 20).

Small networks leave the machine idle: each step of one trial is a handful of tiny matrix products, and the time
goes to Python and operator dispatch. Here the members that share what cannot be vectorised (depth, batch size,
optimizer, activation: :func:`group_key`) train as one model (a :class:`~hpsearch.training.stack.Stack`) whose
weights are stacked along a leading member axis: one batched matrix product (``torch.baddbmm``/``torch.bmm``) per
layer serves every member, and one elementwise update on a flat buffer steps every member's weights, each with its
own learning rate, weight decay, momentum and dropout. Each member still shuffles with its own generator, seeded as
:func:`hpsearch.training.fit.fit` seeds it, so a member computes what it would alone (``tests/test_population.py``
checks it to 1e-6 in float64).

A group is cut into stacks of similar widths (:func:`stacks_by_width`): a member padded to a much wider member's
widths costs what the wide one costs, and a stack has a fixed cost of its own, so the cut weighs the two. The stacks
of a population share nothing, and torch releases the GIL inside its operators: with ``threads`` > 1 (the batched
executor in-process passes this machine's slots), several stacks train at once on threads, with the same results.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpsearch.data.dataset import Dataset
from hpsearch.errors import NonFiniteLossError
from hpsearch.model.encoding import NumericEncoding, encoded_width
from hpsearch.model.network import ModelSpec, build_model, save_model
from hpsearch.training.fit import (
    BEST_EPOCH,
    FoldTrainer,
    Trainer,
    TrialConfig,
    early_stopping,
    model_spec,
    training_targets,
)
from hpsearch.training.stack import STACK_COST, Stack, input_table

__all__ = ["Population", "group_key", "stacks_by_width"]


def group_key(config: TrialConfig) -> tuple:
    """What cannot be vectorised: members with equal keys train in one stacked model.

    Momentum and label smoothing are not part of it: SGD's and RMSprop's updates with a momentum of zero are the
    momentum updates with a zero factor, so members with and without momentum share a stack, and each member
    smooths its targets by its own factor. The inputs (their encoding) and the target's transform are: a stack
    trains on one table. So are the learning-rate schedule (with the budget it spans) and Adam's ``beta2``: each is
    one number per step for the stack.
    """
    adam = config.optimizer in ("adam", "adamw")
    return (len(config.hidden_sizes), config.batch_size, config.optimizer, config.activation,
            config.numeric_encoding, config.target_transform, config.lr_schedule,
            config.max_epochs if config.lr_schedule != "constant" else None, config.adam_beta2 if adam else None)


def stacks(config: TrialConfig) -> bool:
    """Whether a member trains in a stack: not with learned numeric embeddings, which the stack's hand-written
    backward pass does not have, nor cross-validated (``cv``: its folds would each need a stack); such a member
    trains alone, as ``train.fit`` trains it."""
    return config.numeric_embedding == "none" and config.cv <= 1


class Population:
    """Members (trials) trained together: one vectorised model (a stack) per group of equal :func:`group_key` and
    similar widths.

    Each member starts exactly as :func:`hpsearch.training.fit.fit` would start it alone (``torch.manual_seed(seed)``
    then ``build_model``), shuffles with its own ``torch.Generator(seed)``, and reports the metrics ``fit`` reports;
    like ``fit``, it keeps the weights of its best epoch, which are its model. A member that no stack can train
    (:func:`stacks`) trains alone with ``fit``'s :class:`~hpsearch.training.fit.Trainer`, beside the stacks.
    """

    def __init__(self, configs: dict[str, TrialConfig], data: Dataset, *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, threads: int = 1) -> None:
        self.data, self.device, self.dtype = data, torch.device(device), dtype
        self.failed: dict[str, str] = {}
        self._order = list(configs)
        self._specs = {i: model_spec(c, data) for i, c in configs.items()}
        self._kept: dict[str, list[torch.Tensor]] = {}  # weights of members that left, unpadded, on the CPU
        self._best: dict[str, dict[str, Any]] = {i: {"best": None, "bad_epochs": 0, BEST_EPOCH: 0} for i in configs}
        self._best_weights: dict[str, list[torch.Tensor]] = {}
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        keys: dict[tuple, dict[str, TrialConfig]] = {}
        for member_id, config in configs.items():
            if stacks(config):
                keys.setdefault(group_key(config), {})[member_id] = config
        self._stacks = [Stack(members, data, self._specs[next(iter(members))], self._width(next(iter(members))),
                              self.device, dtype)
                        for group in keys.values() for members in stacks_by_width(group, data)]
        for stack in self._stacks:  # made here, not by the threads that train the stacks
            self._inputs(stack.configs[stack.ids[0]])
        self._solos = {i: (FoldTrainer if c.cv > 1 else Trainer)(c, data, device=str(self.device))
                       for i, c in configs.items() if not stacks(c)}
        self._kept_solos: dict[str, Trainer] = {}  # members that trained alone and left
        self._threads = threads if self.device.type == "cpu" else 1

    @property
    def members(self) -> list[str]:
        """Ids still training (not removed, not failed), in insertion order."""
        active = {i for stack in self._stacks for i in stack.ids} | set(self._solos)
        return [i for i in self._order if i in active]

    def train_epoch(self) -> dict[str, dict[str, float]]:
        """One epoch for every active member: ``{id: metrics}`` with the keys ``train.fit`` reports.

        A member whose training loss is not finite goes to :attr:`failed` (with ``fit``'s message) and leaves.
        """
        results: dict[str, dict[str, float]] = {}
        for stack, (losses, evaluated) in zip(self._stacks, self._each_stack(self._stack_epoch), strict=True):
            bad = [i for i, loss in losses.items() if not math.isfinite(loss)]
            for member_id in bad:
                lr = stack.configs[member_id].lr
                self.failed[member_id] = f"training loss became {losses[member_id]} at epoch {stack.epoch} (lr={lr:g})"
            self._leave(stack, bad)
            if stack.ids:
                evaluated = evaluated or stack.evaluate(*self._inputs(stack.configs[stack.ids[0]])[1:])
                for member_id, metrics in evaluated.items():
                    results[member_id] = {"epoch": stack.epoch, "train_loss": losses[member_id], **metrics}
                    self._keep_best(member_id, results[member_id], stack)
        self._stacks = [g for g in self._stacks if g.ids]
        for member_id, trainer in list(self._solos.items()):  # one after another: each owns its random state
            try:
                results[member_id] = {k: v for k, v in trainer.train_epoch().items() if k != "early_stopped"}
            except NonFiniteLossError as err:
                self.failed[member_id] = str(err)
                del self._solos[member_id]
        return {i: results[i] for i in self._order if i in results}

    def _stack_epoch(self, stack: Stack) -> tuple[dict[str, float], dict[str, dict[str, float]] | None]:
        """A stack's epoch and, when every member's loss is finite, its validation (else left to the caller)."""
        table, X_val, y_val = self._inputs(stack.configs[stack.ids[0]])
        losses = dict(zip(stack.ids, stack.train_epoch(table), strict=True))
        if not all(math.isfinite(loss) for loss in losses.values()):
            return losses, None
        return losses, stack.evaluate(X_val, y_val)

    def _inputs(self, config: TrialConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the stacks of members like ``config`` train and validate on: the training table (inputs encoded,
        targets transformed) and the encoded validation inputs and their targets; made once per kind."""
        key = (config.numeric_encoding, config.target_transform)
        if key not in self._tables:
            spec = model_spec(config, self.data)
            encode = NumericEncoding(spec.encoding, spec.n_numeric) if spec.encoding is not None else None

            def inputs(X: Any) -> torch.Tensor:
                X = torch.as_tensor(X, device=self.device, dtype=self.dtype)
                if encode is None:
                    return X
                with torch.no_grad():
                    return encode.to(device=self.device, dtype=self.dtype)(X)

            y = torch.as_tensor(training_targets(self.data, spec), device=self.device)
            y_val = torch.as_tensor(self.data.val.y, device=self.device)
            if self.data.task != "multiclass":
                y_val = y_val.to(self.dtype)
            self._tables[key] = (input_table(inputs(self.data.train.X), y, self.data.task, self.data.n_outputs),
                                 inputs(self.data.val.X), y_val)
        return self._tables[key]

    def _width(self, member_id: str) -> int:
        """A member's input width after its numeric encoding."""
        spec = self._specs[member_id]
        return encoded_width(spec.encoding, spec.n_features, spec.n_numeric)

    def _keep_best(self, member_id: str, metrics: dict[str, float], stack: Stack) -> None:
        """Track the member's best epoch (``train.fit``'s rule) and keep a copy of that epoch's weights."""
        config = stack.configs[member_id]
        state = early_stopping(self._best[member_id], metrics[config.metric], config)
        if state["bad_epochs"] == 0:
            state[BEST_EPOCH] = int(metrics["epoch"])
            self._best_weights[member_id] = stack.weights(member_id)
        self._best[member_id] = state
        metrics[BEST_EPOCH] = state[BEST_EPOCH]

    def _each_stack(self, work: Callable[[Stack], Any]) -> list[Any]:
        """``work`` on every stack, in order; on ``threads`` threads when there are several stacks.

        Stacks share nothing (each has its weights, optimizer state and generators), and torch releases the GIL
        inside its operators, so two stacks train on two cores at once; the results are the same as one after
        another, whatever thread runs which stack. The largest stacks start first.
        """
        if self._threads <= 1 or len(self._stacks) <= 1:
            return [work(stack) for stack in self._stacks]
        order = sorted(range(len(self._stacks)), key=lambda g: -self._stacks[g].cost())
        with ThreadPoolExecutor(min(self._threads, len(self._stacks))) as pool:
            done = dict(zip(order, pool.map(work, [self._stacks[g] for g in order]), strict=True))
        return [done[g] for g in range(len(self._stacks))]

    def remove(self, ids: Iterable[str]) -> None:
        """Stopped members leave their stack (their weights are kept): later epochs cost less."""
        ids = set(ids)
        for stack in self._stacks:
            self._leave(stack, [i for i in stack.ids if i in ids])
        self._stacks = [g for g in self._stacks if g.ids]
        for member_id in ids & set(self._solos):
            self._kept_solos[member_id] = self._solos.pop(member_id)

    def model(self, member_id: str) -> tuple[nn.Module, ModelSpec]:
        """The member's model, the weights of its best epoch, as the standalone model ``train.fit`` returns: on
        the CPU, in eval mode."""
        spec = self._specs[member_id]
        solo = self._solos.get(member_id) or self._kept_solos.get(member_id)
        if solo is not None:
            return solo.best_model().cpu().eval(), solo.spec
        weights = self._best_weights.get(member_id) or self._kept.get(member_id)
        if weights is None:
            stack = next((g for g in self._stacks if member_id in g.ids), None)
            if stack is None:
                raise KeyError(f"no member {member_id!r} in this population")
            weights = stack.weights(member_id)
        with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
            model = build_model(spec)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for layer, (weight, bias) in zip(linears, zip(weights[::2], weights[1::2], strict=True), strict=True):
                layer.weight.copy_(weight.T)
                layer.bias.copy_(bias)
        return model.eval(), spec

    def save(self, member_id: str, directory: Path) -> None:
        """Write the member's model exactly like a trial's model (:func:`hpsearch.model.network.save_model`)."""
        model, spec = self.model(member_id)
        save_model(model, spec, Path(directory))

    def _leave(self, stack: Stack, ids: list[str]) -> None:
        for member_id in ids:
            if member_id not in self._best_weights:
                self._kept[member_id] = stack.weights(member_id)
        stack.remove(ids)


def stacks_by_width(members: dict[str, TrialConfig], data: Dataset) -> list[dict[str, TrialConfig]]:
    """Members of one group cut into stacks of similar widths, so that padding does not cost more than it saves.

    A stack pads every member to its widest member's widths, and its cost is about :data:`STACK_COST` plus its
    members times the padded weights; a member of 16 units padded to 256 costs what a 256-unit member costs. The
    members are ordered by their weights, and the cut of that order into consecutive stacks with the least cost
    is found by dynamic programming (16 members at most: a few hundred sums).
    """
    def shapes(config: TrialConfig) -> list[int]:
        return [data.n_features, *config.hidden_sizes, data.n_outputs]

    ordered = sorted(members, key=lambda i: (sum(a * b for a, b in itertools.pairwise(shapes(members[i]))), i))
    widths = [shapes(members[i]) for i in ordered]

    def cost(start: int, end: int) -> int:
        widest = [max(column) for column in zip(*widths[start:end], strict=True)]
        return STACK_COST + (end - start) * sum(a * b for a, b in itertools.pairwise(widest))

    best: list[tuple[float, int]] = [(0.0, 0)]  # best[j] = (least cost of the first j members, start of the last stack)
    for end in range(1, len(ordered) + 1):
        best.append(min((best[start][0] + cost(start, end), start) for start in range(end)))
    cuts, end = [], len(ordered)
    while end:
        start = best[end][1]
        cuts.append(ordered[start:end])
        end = start
    return [{i: members[i] for i in members if i in cut} for cut in map(set, reversed(cuts))]

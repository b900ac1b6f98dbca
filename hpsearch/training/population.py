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
from hpsearch.model.network import ModelSpec, build_model, save_model
from hpsearch.training.fit import TrialConfig, model_spec
from hpsearch.training.stack import STACK_COST, Stack, split_table, split_tensors

__all__ = ["Population", "group_key", "stacks_by_width"]


def group_key(config: TrialConfig) -> tuple:
    """What cannot be vectorised: members with equal keys train in one stacked model.

    Momentum is not part of it: SGD's and RMSprop's updates with a momentum of zero are the momentum updates
    with a zero factor, so members with and without momentum share a stack.
    """
    return (len(config.hidden_sizes), config.batch_size, config.optimizer, config.activation)


class Population:
    """Members (trials) trained together: one vectorised model (a stack) per group of equal :func:`group_key` and
    similar widths.

    Each member starts exactly as :func:`hpsearch.training.fit.fit` would start it alone (``torch.manual_seed(seed)``
    then ``build_model``), shuffles with its own ``torch.Generator(seed)``, and reports the metrics ``fit`` reports.
    """

    def __init__(self, configs: dict[str, TrialConfig], data: Dataset, *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, threads: int = 1) -> None:
        self.data, self.device, self.dtype = data, torch.device(device), dtype
        self.failed: dict[str, str] = {}
        self._order = list(configs)
        self._specs = {i: model_spec(c, data) for i, c in configs.items()}
        self._kept: dict[str, list[torch.Tensor]] = {}  # weights of members that left, unpadded, on the CPU
        self._train = split_table(data.train, data.task, data.n_outputs, self.device, dtype)
        self._val = split_tensors(data.val, data.task, self.device, dtype)
        keys: dict[tuple, dict[str, TrialConfig]] = {}
        for member_id, config in configs.items():
            keys.setdefault(group_key(config), {})[member_id] = config
        stacks = [stack for members in keys.values() for stack in stacks_by_width(members, data)]
        self._stacks = [Stack(members, data, self.device, dtype) for members in stacks]
        self._threads = threads if self.device.type == "cpu" else 1

    @property
    def members(self) -> list[str]:
        """Ids still training (not removed, not failed), in insertion order."""
        active = {i for stack in self._stacks for i in stack.ids}
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
                evaluated = evaluated or stack.evaluate(*self._val, self.data.target_std)
                for member_id, metrics in evaluated.items():
                    results[member_id] = {"epoch": stack.epoch, "train_loss": losses[member_id], **metrics}
        self._stacks = [g for g in self._stacks if g.ids]
        return {i: results[i] for i in self._order if i in results}

    def _stack_epoch(self, stack: Stack) -> tuple[dict[str, float], dict[str, dict[str, float]] | None]:
        """A stack's epoch and, when every member's loss is finite, its validation (else left to the caller)."""
        losses = dict(zip(stack.ids, stack.train_epoch(self._train), strict=True))
        if not all(math.isfinite(loss) for loss in losses.values()):
            return losses, None
        return losses, stack.evaluate(*self._val, self.data.target_std)

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
        """Stopped members leave their stack (their last weights are kept): later epochs cost less."""
        ids = set(ids)
        for stack in self._stacks:
            self._leave(stack, [i for i in stack.ids if i in ids])
        self._stacks = [g for g in self._stacks if g.ids]

    def model(self, member_id: str) -> tuple[nn.Module, ModelSpec]:
        """The member's weights as the standalone model ``train.fit`` would hold: on the CPU, in eval mode."""
        weights = self._kept.get(member_id)
        if weights is None:
            stack = next((g for g in self._stacks if member_id in g.ids), None)
            if stack is None:
                raise KeyError(f"no member {member_id!r} in this population")
            weights = stack.weights(member_id)
        spec = self._specs[member_id]
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

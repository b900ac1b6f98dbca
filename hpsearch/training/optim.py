"""The optimizer step of a trial: torch's update functions, called without torch.optim's wrapper.

Why not ``torch.optim.Adam(fused=True)`` itself: constructing any ``torch.optim`` optimizer imports
``torch._dynamo`` (1.1-2.3 s on 2 cores, paid by every trial process that builds one), and the Python around its
kernel call (profiling hooks, ``zero_grad``) costs more per step than the kernel at the batch sizes we search.
The functions those classes call in their ``step`` are public (``torch.optim.adam.adam``,
``torch.optim.adamw.adamw``, ``torch.optim.sgd.sgd``, ``torch.optim.rmsprop.rmsprop``: each module's ``__all__``)
and import nothing more when called outside ``torch.compile``. :class:`FusedOptimizer` keeps torch.optim's state
and calls them with ``fused=True`` and torch.optim's arguments, or, on the tested torch, the fused op they call
(:mod:`hpsearch.upstream_internals`); :class:`RMSprop` (no fused kernel) calls the
function ``torch.optim.RMSprop.step`` calls. Both take the gradients from ``torch.autograd.grad`` (no ``.grad``
to zero): the trained weights are bit-for-bit those of ``torch.optim`` (``tests/test_optim.py`` checks it).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.adam import adam
from torch.optim.adamw import adamw
from torch.optim.rmsprop import rmsprop
from torch.optim.sgd import sgd

from hpsearch.upstream_internals import torch_fused_op

__all__ = ["FusedOptimizer", "Optimizer", "RMSprop", "lr_factor", "make_optimizer"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8  # torch's default eps for Adam, AdamW and RMSprop
RMSPROP_ALPHA = 0.99
#: The ``cosine`` schedule's linear warm-up: this share of a trial's steps.
WARMUP_SHARE = 0.05
#: The ``onecycle`` schedule: torch's ``OneCycleLR`` defaults (``pct_start``, ``div_factor``, ``final_div_factor``).
ONECYCLE_PCT, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The share of the base learning rate that the optimizer step number ``step`` (0-based) takes.

    ``constant``: 1. ``cosine``: a linear warm-up over the first :data:`WARMUP_SHARE` of ``total_steps``, then
    a cosine decay to 0 at the last step. ``onecycle``: torch's ``OneCycleLR`` with its defaults (from 1/25 up to
    1 over the first 30 % of the steps, then down to 1/250,000, both halves cosine), computed as torch computes
    it; its momentum cycling is left out, so that it means the same for every optimizer.
    """
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    if schedule == "cosine":
        warmup = max(1, round(WARMUP_SHARE * total_steps))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup + 1) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        initial, final = 1 / ONECYCLE_DIV, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
        peak = float(ONECYCLE_PCT * total_steps) - 1
        if step <= peak:
            return _cosine_between(initial, 1.0, step / peak if peak > 0 else 1.0)
        return _cosine_between(1.0, final, min(1.0, (step - peak) / (total_steps - 1 - peak)))
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def _cosine_between(start: float, end: float, progress: float) -> float:
    """torch's ``OneCycleLR._annealing_cos``: from ``start`` to ``end`` along half a cosine."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1)


class Optimizer(Protocol):
    """What the training loop needs from an optimizer: a step from a loss, and a state to checkpoint."""

    def step(self, loss: torch.Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float, momentum: float,
                   beta2: float = ADAM_BETAS[1]) -> Optimizer:
    """The optimizer a trial's ``optimizer`` parameter names (``sgd``, ``adam``, ``adamw`` or ``rmsprop``);
    ``beta2`` is Adam's and AdamW's. Its ``lr`` attribute is the learning rate of the next step (a schedule sets
    it)."""
    params = list(model.parameters())
    if name == "rmsprop":
        return RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    return FusedOptimizer(name, params, lr=lr, weight_decay=weight_decay, momentum=momentum, beta2=beta2)


class FusedOptimizer:
    """SGD (with momentum), Adam or AdamW as torch's fused update (torch's defaults for the rest).

    On the tested torch the fused op is called directly (:func:`hpsearch.upstream_internals.torch_fused_op`: the
    public function's Python costs 20-60 us a step); elsewhere through the public functional API.
    """

    def __init__(self, name: str, params: list[torch.Tensor], *, lr: float, weight_decay: float,
                 momentum: float = 0.0, beta2: float = ADAM_BETAS[1], private_op: bool = True) -> None:
        if name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"no fused kernel for optimizer {name!r}")
        self.name, self.params, self.beta2 = name, params, beta2
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.op = torch_fused_op(name) if private_op else None  # None: the public functional API
        device = params[0].device
        # One step counter for all parameters (torch.optim keeps one per parameter, always equal).
        self.steps = torch.zeros((), dtype=torch.float32, device=device)
        self.exp_avg = [torch.zeros_like(p) for p in params] if name != "sgd" else []
        self.exp_avg_sq = [torch.zeros_like(p) for p in params] if name != "sgd" else []
        self.momentum_buffer: list[torch.Tensor] = []  # SGD: the update fills it on the first step

    def step(self, loss: torch.Tensor) -> None:
        grads = list(torch.autograd.grad(loss, self.params))
        with torch.no_grad():
            if self.name == "sgd":
                self._sgd(grads)
            elif self.op is not None:
                self.steps += 1
                self.op(self.params, grads, self.exp_avg, self.exp_avg_sq, [], [self.steps] * len(self.params),
                        amsgrad=False, lr=self.lr, beta1=ADAM_BETAS[0], beta2=self.beta2,
                        weight_decay=self.weight_decay, eps=ADAM_EPS, maximize=False, grad_scale=None,
                        found_inf=None)
            else:
                steps = [self.steps.clone() for _ in self.params]  # the function increments each
                update = adamw if self.name == "adamw" else adam
                update(self.params, grads, self.exp_avg, self.exp_avg_sq, [], steps, fused=True, amsgrad=False,
                       beta1=ADAM_BETAS[0], beta2=self.beta2, lr=self.lr, weight_decay=self.weight_decay,
                       eps=ADAM_EPS, maximize=False)
                self.steps = steps[0]

    def _sgd(self, grads: list[torch.Tensor]) -> None:
        first = self.momentum != 0 and not self.momentum_buffer
        if self.op is not None:
            if first:
                self.momentum_buffer = [torch.empty_like(g) for g in grads]
            self.op(self.params, grads, self.momentum_buffer, weight_decay=self.weight_decay, momentum=self.momentum,
                    lr=self.lr, dampening=0.0, nesterov=False, maximize=False, is_first_step=first, grad_scale=None,
                    found_inf=None)
            return
        buffers: list[torch.Tensor | None] = [None] * len(grads) if first or not self.momentum else self.momentum_buffer
        sgd(self.params, grads, buffers, fused=True, weight_decay=self.weight_decay, momentum=self.momentum,
            lr=self.lr, dampening=0.0, nesterov=False, maximize=False)
        if self.momentum:
            self.momentum_buffer = buffers  # filled in place on the first step

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "momentum_buffer": self.momentum_buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.steps.device
        self.steps = state["steps"].to(device)
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            setattr(self, key, [t.to(device) for t in state[key]])


class RMSprop:
    """RMSprop with torch's defaults (``alpha=0.99``, ``eps=1e-8``, not centered), through its update function.

    ``torch.optim.rmsprop.rmsprop`` is the function ``torch.optim.RMSprop.step`` calls; calling it directly
    does not import ``torch._dynamo``. The state is torch.optim's: a step counter per parameter (the update
    increments each), the running average of squared gradients, and a momentum buffer when ``momentum > 0``.
    """

    def __init__(self, params: list[torch.Tensor], *, lr: float, weight_decay: float, momentum: float = 0.0) -> None:
        self.params, self.lr, self.weight_decay, self.momentum = params, lr, weight_decay, momentum
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in params]
        self.square_avg = [torch.zeros_like(p) for p in params]
        self.momentum_buffer = [torch.zeros_like(p) for p in params] if momentum > 0 else []

    def step(self, loss: torch.Tensor) -> None:
        grads = list(torch.autograd.grad(loss, self.params))
        with torch.no_grad():
            rmsprop(self.params, grads, self.square_avg, [], self.momentum_buffer, self.steps, lr=self.lr,
                         alpha=RMSPROP_ALPHA, eps=ADAM_EPS, weight_decay=self.weight_decay, momentum=self.momentum,
                         centered=False, maximize=False, differentiable=False, capturable=False, has_complex=False)

    def state_dict(self) -> dict[str, Any]:
        return {"name": "rmsprop", "steps": self.steps, "square_avg": self.square_avg,
                "momentum_buffer": self.momentum_buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.params[0].device
        self.steps = [t.to("cpu") for t in state["steps"]]
        self.square_avg = [t.to(device) for t in state["square_avg"]]
        self.momentum_buffer = [t.to(device) for t in state["momentum_buffer"]]

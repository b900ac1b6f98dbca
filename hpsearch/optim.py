"""The optimizer step of a trial: torch's functional update API, called without torch.optim's wrapper.

Why not ``torch.optim.Adam(fused=True)`` itself: constructing any ``torch.optim`` optimizer imports
``torch._dynamo`` (1.1-2.3 s on 2 cores, paid by every trial process that builds one), and the Python around its
kernel call (profiling hooks, ``zero_grad``) costs more per step than the kernel at the batch sizes we search.
The functions those classes call in their ``step`` are public (``torch.optim.adam.adam``,
``torch.optim.adamw.adamw``, ``torch.optim.sgd.sgd``, ``torch.optim.rmsprop.rmsprop``: each module's ``__all__``)
and import nothing more when called outside ``torch.compile``. :class:`FusedOptimizer` keeps torch.optim's state
and calls them with ``fused=True`` and torch.optim's arguments; :class:`RMSprop` (no fused kernel) calls the
function ``torch.optim.RMSprop.step`` calls. Both take the gradients from ``torch.autograd.grad`` (no ``.grad``
to zero): the trained weights are bit-for-bit those of ``torch.optim`` (``tests/test_optim.py`` checks it).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.adam import adam
from torch.optim.adamw import adamw
from torch.optim.rmsprop import rmsprop
from torch.optim.sgd import sgd

__all__ = ["FusedOptimizer", "Optimizer", "RMSprop", "make_optimizer"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8  # torch's default eps for Adam, AdamW and RMSprop
RMSPROP_ALPHA = 0.99


class Optimizer(Protocol):
    """What the training loop needs from an optimizer: a step from a loss, and a state to checkpoint."""

    def step(self, loss: torch.Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float, momentum: float) -> Optimizer:
    """The optimizer a trial's ``optimizer`` parameter names (``sgd``, ``adam``, ``adamw`` or ``rmsprop``)."""
    params = list(model.parameters())
    if name == "rmsprop":
        return RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    return FusedOptimizer(name, params, lr=lr, weight_decay=weight_decay, momentum=momentum)


class FusedOptimizer:
    """SGD (with momentum), Adam or AdamW as torch's fused update (torch's defaults for the rest)."""

    def __init__(self, name: str, params: list[torch.Tensor], *, lr: float, weight_decay: float,
                 momentum: float = 0.0) -> None:
        if name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"no fused kernel for optimizer {name!r}")
        self.name, self.params = name, params
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        device = params[0].device
        # torch.optim's state: a step counter per parameter (the update increments each), the running averages.
        self.steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in params] if name != "sgd" else []
        self.exp_avg = [torch.zeros_like(p) for p in params] if name != "sgd" else []
        self.exp_avg_sq = [torch.zeros_like(p) for p in params] if name != "sgd" else []
        # SGD with momentum: the update fills the buffers on the first step (while every one is None).
        self.momentum_buffer: list[torch.Tensor | None] = [None] * len(params) if momentum != 0 else []

    def step(self, loss: torch.Tensor) -> None:
        grads = list(torch.autograd.grad(loss, self.params))
        with torch.no_grad():
            if self.name == "sgd":
                sgd(self.params, grads, self.momentum_buffer or [None] * len(grads), fused=True,
                    weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr, dampening=0.0,
                    nesterov=False, maximize=False)
                return
            update = adamw if self.name == "adamw" else adam
            update(self.params, grads, self.exp_avg, self.exp_avg_sq, [], self.steps, fused=True, amsgrad=False,
                   beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], lr=self.lr, weight_decay=self.weight_decay,
                   eps=ADAM_EPS, maximize=False)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "momentum_buffer": self.momentum_buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.params[0].device
        steps = state["steps"]
        if isinstance(steps, torch.Tensor):  # a checkpoint of hpsearch 0.1.0: one counter for every parameter
            steps = [steps.clone() for _ in self.params] if self.name != "sgd" else []
        self.steps = [t.to(device) for t in steps]
        self.exp_avg = [t.to(device) for t in state["exp_avg"]]
        self.exp_avg_sq = [t.to(device) for t in state["exp_avg_sq"]]
        buffers = state["momentum_buffer"]
        if self.momentum != 0 and not buffers:  # a checkpoint of hpsearch 0.1.0 saved before the first step
            buffers = [None] * len(self.params)
        self.momentum_buffer = [None if t is None else t.to(device) for t in buffers]


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

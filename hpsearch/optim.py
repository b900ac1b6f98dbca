"""The optimizer step of a trial: torch's fused SGD / Adam / AdamW kernels, called without torch.optim's wrapper.

Why not ``torch.optim.Adam(fused=True)`` itself: at the batch sizes we search, the Python around its one kernel
call (profiling hooks, ``zero_grad``, regrouping the tensors, a counter per parameter) costs more per step than
the kernel, and constructing any ``torch.optim`` optimizer imports ``torch._dynamo`` (about 1 s, paid once by every
trial process). :class:`FusedOptimizer` keeps the same state, calls the same kernels with the same arguments as
``torch.optim`` does with ``fused=True``, and takes the gradients from ``torch.autograd.grad`` (no ``.grad`` to
zero): the trained weights are bit-for-bit those of ``torch.optim`` (``tests/test_optim.py`` checks it).
RMSprop has no fused kernel and goes through ``torch.optim`` (:class:`TorchOptimizer`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["FusedOptimizer", "Optimizer", "TorchOptimizer", "make_optimizer"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class Optimizer(Protocol):
    """What the training loop needs from an optimizer: a step from a loss, and a state to checkpoint."""

    def step(self, loss: torch.Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float, momentum: float) -> Optimizer:
    """The optimizer a trial's ``optimizer`` parameter names (``sgd``, ``adam``, ``adamw`` or ``rmsprop``)."""
    params = list(model.parameters())
    if name == "rmsprop":
        return TorchOptimizer(torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay))
    return FusedOptimizer(name, params, lr=lr, weight_decay=weight_decay, momentum=momentum)


class FusedOptimizer:
    """SGD (with momentum), Adam or AdamW as one fused kernel call per step (torch's defaults for the rest)."""

    def __init__(self, name: str, params: list[torch.Tensor], *, lr: float, weight_decay: float,
                 momentum: float = 0.0) -> None:
        if name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"no fused kernel for optimizer {name!r}")
        self.name, self.params = name, params
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        device = params[0].device
        # One step counter for all parameters (torch.optim keeps one per parameter, always equal).
        self.steps = torch.zeros((), dtype=torch.float32, device=device)
        self.exp_avg = [torch.zeros_like(p) for p in params] if name != "sgd" else []
        self.exp_avg_sq = [torch.zeros_like(p) for p in params] if name != "sgd" else []
        self.momentum_buffer: list[torch.Tensor] = []  # SGD: the kernel fills it on the first step

    def step(self, loss: torch.Tensor) -> None:
        grads = list(torch.autograd.grad(loss, self.params))
        if self.name == "sgd":
            self._sgd(grads)
            return
        self.steps += 1
        kernel = torch._fused_adamw_ if self.name == "adamw" else torch._fused_adam_
        kernel(self.params, grads, self.exp_avg, self.exp_avg_sq, [], [self.steps] * len(self.params),
               amsgrad=False, lr=self.lr, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], weight_decay=self.weight_decay,
               eps=ADAM_EPS, maximize=False, grad_scale=None, found_inf=None)

    def _sgd(self, grads: list[torch.Tensor]) -> None:
        first = self.momentum != 0 and not self.momentum_buffer
        if first:
            self.momentum_buffer = [torch.empty_like(g) for g in grads]
        torch._fused_sgd_(self.params, grads, self.momentum_buffer, weight_decay=self.weight_decay,
                          momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False,
                          is_first_step=first, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "momentum_buffer": self.momentum_buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.steps.device
        self.steps = state["steps"].to(device)
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            setattr(self, key, [t.to(device) for t in state[key]])


class TorchOptimizer:
    """A ``torch.optim`` optimizer behind the same interface (the classic zero_grad / backward / step)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

"""hpsearch.optim calls torch's fused kernels directly: the weights must be exactly those torch.optim gives."""

import copy

import pytest
import torch
from torch import nn

from hpsearch.optim import FusedOptimizer, TorchOptimizer, make_optimizer

SETTINGS = {
    "sgd": dict(lr=0.05, weight_decay=1e-3, momentum=0.9),
    "sgd-no-momentum": dict(lr=0.05, weight_decay=0.0, momentum=0.0),
    "adam": dict(lr=1e-2, weight_decay=1e-3, momentum=0.0),
    "adamw": dict(lr=1e-2, weight_decay=1e-2, momentum=0.0),
}


def _torch_optim(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float):
    params = model.parameters()
    if name.startswith("sgd"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, fused=True)


def _batches(n: int = 8):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 5, generator=generator), torch.randint(0, 3, (16,), generator=generator))
            for _ in range(n)]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def _train(model: nn.Module, step, batches) -> None:
    for X, y in batches:
        step(nn.functional.cross_entropy(model(X), y))


@pytest.mark.parametrize("name", SETTINGS)
def test_fused_optimizer_gives_the_same_weights_as_torch_optim(name):
    ours, theirs = _net(), _net()
    optimizer = make_optimizer(name.split("-")[0], ours, **SETTINGS[name])
    assert isinstance(optimizer, FusedOptimizer)
    reference = TorchOptimizer(_torch_optim(name, theirs, **SETTINGS[name]))
    batches = _batches()
    _train(ours, optimizer.step, batches)
    _train(theirs, reference.step, batches)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", SETTINGS)
def test_fused_optimizer_resumes_from_its_state_dict_exactly(name):
    straight, resumed = _net(), _net()
    batches = _batches()
    optimizer = make_optimizer(name.split("-")[0], straight, **SETTINGS[name])
    _train(straight, optimizer.step, batches)

    first = make_optimizer(name.split("-")[0], resumed, **SETTINGS[name])
    _train(resumed, first.step, batches[:4])
    state = copy.deepcopy(first.state_dict())
    second = make_optimizer(name.split("-")[0], resumed, **SETTINGS[name])
    second.load_state_dict(state)
    _train(resumed, second.step, batches[4:])
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rmsprop_goes_through_torch_optim():
    assert isinstance(make_optimizer("rmsprop", _net(), lr=1e-3, weight_decay=0.0, momentum=0.0), TorchOptimizer)

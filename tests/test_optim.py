"""hpsearch.training.optim calls torch's update functions directly: the weights are exactly those torch.optim gives."""

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from hpsearch.training.optim import FusedOptimizer, RMSprop, make_optimizer

SETTINGS = {
    "sgd": dict(lr=0.05, weight_decay=1e-3, momentum=0.9),
    "sgd-no-momentum": dict(lr=0.05, weight_decay=0.0, momentum=0.0),
    "adam": dict(lr=1e-2, weight_decay=1e-3, momentum=0.0),
    "adamw": dict(lr=1e-2, weight_decay=1e-2, momentum=0.0),
    "rmsprop": dict(lr=1e-2, weight_decay=1e-3, momentum=0.9),
    "rmsprop-no-momentum": dict(lr=1e-2, weight_decay=0.0, momentum=0.0),
}


def _torch_optim(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float):
    params = model.parameters()
    if name.startswith("rmsprop"):
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
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


def _torch_step(optimizer: torch.optim.Optimizer):
    def step(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


@pytest.mark.parametrize("name", SETTINGS)
def test_our_optimizer_gives_the_same_weights_as_torch_optim(name):
    ours, theirs = _net(), _net()
    optimizer = make_optimizer(name.split("-")[0], ours, **SETTINGS[name])
    assert isinstance(optimizer, RMSprop if name.startswith("rmsprop") else FusedOptimizer)
    batches = _batches()
    _train(ours, optimizer.step, batches)
    _train(theirs, _torch_step(_torch_optim(name, theirs, **SETTINGS[name])), batches)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", [name for name in SETTINGS if not name.startswith("rmsprop")])
def test_on_another_torch_the_public_functional_api_gives_the_same_weights_and_state(name):
    """Where torch's private fused ops are missing (another release), the public functions do the same update."""
    ours, theirs, resumed = _net(), _net(), _net()
    settings = SETTINGS[name]
    optimizer = FusedOptimizer(name.split("-")[0], list(ours.parameters()), private_op=False, **settings)
    assert optimizer.op is None
    batches = _batches()
    _train(ours, optimizer.step, batches)
    _train(theirs, _torch_step(_torch_optim(name, theirs, **settings)), batches)
    first = FusedOptimizer(name.split("-")[0], list(resumed.parameters()), **settings)  # the private op
    _train(resumed, first.step, batches[:4])
    second = FusedOptimizer(name.split("-")[0], list(resumed.parameters()), private_op=False, **settings)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    _train(resumed, second.step, batches[4:])
    for a, b, c in zip(ours.parameters(), theirs.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("name", SETTINGS)
def test_our_optimizer_resumes_from_its_state_dict_exactly(name):
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


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_a_training_step_does_not_import_torch_dynamo(name):
    """Importing torch._dynamo (what constructing a torch.optim optimizer does) costs every trial process 1-2 s."""
    code = ("import sys, torch; from hpsearch.training.optim import make_optimizer; net = torch.nn.Linear(3, 2); "
            f"opt = make_optimizer({name!r}, net, lr=0.1, weight_decay=0.01, momentum=0.9); "
            "opt.step(net(torch.ones(4, 3)).sum()); print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

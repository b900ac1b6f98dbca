"""A cross-validated trial's model: its fold models averaged, as one network (``cv=`` in the space file).

Each fold's network was trained on the other folds, with its own inputs' encoding and target scale. The average
is taken in what they predict (numbers in the target's units, or class probabilities) and given back as one
network's outputs would be read with the average's own spec (:func:`average_spec`): the standardised target, or
the logits of the averaged probabilities. So the average is tested, served and ensembled as any one network is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from .network import ModelSpec

__all__ = ["FoldAverage", "average_spec", "fold_specs", "rebuild"]

_EPSILON = 1e-7


class FoldAverage(nn.Module):
    """The average of fold networks (``members``, each read with its spec in ``specs``) under ``spec``."""

    def __init__(self, members: Sequence[nn.Module], specs: Sequence[ModelSpec], spec: ModelSpec) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.specs, self.spec = list(specs), spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [member(x) for member in self.members]
        if self.spec.task == "regression":
            units = torch.stack([s.to_units(o.squeeze(1)) for o, s in zip(outputs, self.specs, strict=True)]).mean(0)
            return ((units - self.spec.target_mean) / self.spec.target_std).unsqueeze(1).to(outputs[0].dtype)
        if self.spec.task == "binary":
            positive = torch.stack([torch.sigmoid(o) for o in outputs]).mean(0)
            return torch.logit(positive.clamp(_EPSILON, 1 - _EPSILON))
        probabilities = torch.stack([torch.softmax(o, dim=1) for o in outputs]).mean(0)
        return torch.log(probabilities.clamp_min(_EPSILON))


def average_spec(specs: Sequence[ModelSpec], target_mean: float, target_std: float) -> ModelSpec:
    """The spec of the folds' average: the first fold's shape, outputs read as the standardised target
    (``target_mean``, ``target_std``: the search's), and each fold's own spec in ``folds``."""
    return replace(specs[0], encoding=None, numeric_embedding="none", target_transform="none", transform_mean=0.0,
                   transform_std=1.0, target_mean=target_mean, target_std=target_std,
                   folds=[json.loads(spec.to_json()) for spec in specs])


def fold_specs(spec: ModelSpec) -> list[ModelSpec]:
    """Each fold's spec, from the average's."""
    return [ModelSpec.from_json(json.dumps(fold)) for fold in spec.folds or []]


def rebuild(spec: ModelSpec, build: Callable[[ModelSpec], nn.Module]) -> FoldAverage:
    """The average of the folds of ``spec``, each built by ``build(fold_spec)`` (untrained: load its weights)."""
    specs = fold_specs(spec)
    return FoldAverage([build(s) for s in specs], specs, spec)

"""Build the network a trial trains, and save / load it without unpickling code.

A model is fully described by a small JSON-able spec (:class:`ModelSpec`): a checkpoint is that spec plus a
``state_dict`` saved with :func:`torch.save` and loaded back with ``weights_only=True``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSpec", "build_model", "load_model", "save_model"]

WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.json"


def model_files(directory: str | Path) -> list[Path]:
    """The files a saved model is made of: its weights, its spec, and the space file's code for a user model."""
    from .user_model import CODE_FILE

    return [Path(directory) / name for name in (WEIGHTS_FILE, SPEC_FILE, CODE_FILE)
            if name != CODE_FILE or (Path(directory) / name).is_file()]

# torch loads in the functions that need it: the spec alone (publishing a model) needs no torch
_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU", "gelu": "GELU"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a trained network and read its outputs."""

    n_features: int
    n_outputs: int
    hidden_sizes: tuple[int, ...]
    activation: str = "relu"
    dropout: float = 0.0
    task: str = "multiclass"
    classes: list[Any] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0
    #: One example's shape (``(n_features,)`` for a table); the space file's own model is built for it.
    input_shape: tuple[int, ...] | None = None
    #: The space file's model (``model=``): ``function``, ``space_file`` (its name) and the ``config`` it was
    #: built with; its code is :data:`hpsearch.model.user_model.CODE_FILE` beside the weights. None: the MLP.
    user_model: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "hidden_sizes": list(self.hidden_sizes)}, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        raw = json.loads(text)
        shape = raw.get("input_shape")
        return cls(**{**raw, "hidden_sizes": tuple(raw["hidden_sizes"]),
                      "input_shape": tuple(shape) if shape is not None else None})


def build_model(spec: ModelSpec) -> nn.Sequential:
    """An MLP: ``Linear -> activation -> Dropout`` per hidden layer, then a linear output layer."""
    from torch import nn

    modules: list[nn.Module] = []
    width = spec.n_features
    for units in spec.hidden_sizes:
        modules += [nn.Linear(width, units), getattr(nn, _ACTIVATIONS[spec.activation])()]
        if spec.dropout > 0:
            modules.append(nn.Dropout(spec.dropout))
        width = units
    modules.append(nn.Linear(width, spec.n_outputs))
    return nn.Sequential(*modules)


def save_model(model: nn.Module, spec: ModelSpec, directory: Path, *, code: str | None = None) -> None:
    """Write the weights and the spec into ``directory``, and ``code`` (the space file's, for its own model)."""
    import torch

    from .user_model import CODE_FILE

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    (directory / SPEC_FILE).write_text(spec.to_json())
    if code is not None:
        (directory / CODE_FILE).write_text(code)


def load_model(directory: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model saved by :func:`save_model`, in eval mode, on the CPU (the space file's own model from the
    code saved beside it)."""
    import torch

    directory = Path(directory)
    spec = ModelSpec.from_json((directory / SPEC_FILE).read_text())
    if spec.user_model is not None:
        from .user_model import rebuild

        model = rebuild(spec, directory)
    else:
        model = build_model(spec)
    model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec

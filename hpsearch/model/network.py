"""Build the network a trial trains, and save / load it without unpickling code.

A model is fully described by a small JSON-able spec (:class:`ModelSpec`): a checkpoint is that spec plus a
``state_dict`` saved with :func:`torch.save` and loaded back with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSpec", "build_model", "load_model", "save_model", "save_tensors"]

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
    #: The first ``n_numeric`` inputs are the numeric columns (the one-hot columns follow).
    n_numeric: int = 0
    #: Their encoding's fitted numbers (:func:`hpsearch.model.encoding.fit_encoding`); None: used as given.
    encoding: dict[str, Any] | None = None
    #: ``periodic``: learned periodic embeddings of the numeric inputs (:mod:`hpsearch.model.encoding`).
    numeric_embedding: str = "none"
    #: A regression network learns ``log1p`` of the target (``log1p``) or the target itself (``none``), standardised:
    #: ``target_mean``/``target_std`` are the target's, ``transform_mean``/``transform_std`` its transform's.
    target_transform: str = "none"
    transform_mean: float = 0.0
    transform_std: float = 1.0
    #: A cross-validated trial's model (``cv=``): each fold's spec; the model averages them (:mod:`.folds`).
    folds: list[dict[str, Any]] | None = None

    def to_units(self, outputs: Any) -> Any:
        """A regression network's outputs (numpy or torch, one per row) in the target's units."""
        from .encoding import to_units

        return to_units(outputs, self.target_mean, self.target_std, self.target_transform, self.transform_mean,
                        self.transform_std)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "hidden_sizes": list(self.hidden_sizes)}, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        raw = json.loads(text)
        shape = raw.get("input_shape")
        return cls(**{**raw, "hidden_sizes": tuple(raw["hidden_sizes"]),
                      "input_shape": tuple(shape) if shape is not None else None})


def build_model(spec: ModelSpec) -> nn.Module:
    """An MLP: ``Linear -> activation -> Dropout`` per hidden layer, then a linear output layer; in front, the
    numeric inputs' encoding and embeddings where the spec has them (:mod:`hpsearch.model.encoding`). A spec with
    ``folds``: their average (:mod:`hpsearch.model.folds`)."""
    from torch import nn

    from .encoding import build_input_layers

    if spec.folds:
        from .folds import rebuild as average

        return average(spec, build_model)
    modules, width = build_input_layers(spec)
    for units in spec.hidden_sizes:
        modules += [nn.Linear(width, units), getattr(nn, _ACTIVATIONS[spec.activation])()]
        if spec.dropout > 0:
            modules.append(nn.Dropout(spec.dropout))
        width = units
    modules.append(nn.Linear(width, spec.n_outputs))
    return nn.Sequential(*modules)


def save_model(model: nn.Module, spec: ModelSpec, directory: Path, *, code: str | None = None,
               weights: dict[str, Any] | None = None) -> None:
    """Write the weights (``model``'s, or ``weights``: a state dict of it) and the spec into ``directory``, and
    ``code`` (the space file's, for its own model)."""
    from .user_model import CODE_FILE

    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(model.state_dict() if weights is None else weights, directory / WEIGHTS_FILE)
    _write_text(directory / SPEC_FILE, spec.to_json())
    if code is not None:
        _write_text(directory / CODE_FILE, code)


def save_tensors(value: Any, path: Path) -> None:
    """``torch.save(value)`` into ``path``; a failed write (a full disk) raises the system's ``OSError`` naming the
    file, and the partial file is removed.

    torch reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc]`` (given a file name or a
    Python file alike); written by Python, it is the ``OSError`` that the command line reports as the machine's
    failure (exit code 3). The bytes are made in memory first: a model's size again, for a moment.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    try:
        with open(path, "wb") as handle:
            handle.write(buffer.getbuffer())
    except OSError as err:
        _failed_write(path, err)


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        _failed_write(path, err)


def _failed_write(path: Path, err: OSError) -> None:
    """Remove what a failed write left (it frees the room a full disk needs to close the runs), then raise
    ``err`` naming the file."""
    path.unlink(missing_ok=True)
    if err.filename is None:
        raise OSError(err.errno, err.strerror, str(path)) from None
    raise err


def load_model(directory: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model saved by :func:`save_model`, in eval mode, on the CPU (the space file's own model from the
    code saved beside it)."""
    import torch

    directory = Path(directory)
    spec = ModelSpec.from_json((directory / SPEC_FILE).read_text())
    if spec.user_model is not None:
        from .folds import rebuild as average
        from .user_model import rebuild

        model = average(spec, lambda fold: rebuild(fold, directory)) if spec.folds else rebuild(spec, directory)
    else:
        model = build_model(spec)
    model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec

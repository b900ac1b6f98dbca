"""Your own network: the space file's ``model=`` function, loaded, checked, built and described.

The contract: ``build(config, input_shape, n_outputs)`` is a top-level function of the space file; it gets the
trial's values (``config``), one example's shape (``(n_features,)`` for a table after its preprocessing,
``(C, H, W)`` for images) and the number of outputs (the classes, or 1 for binary and regression), and returns
a ``torch.nn.Module`` whose output is ``(batch, n_outputs)``.

The function travels as its source: :class:`UserModel` holds the space file's code and the function's name,
plain data that Ray ships to its workers, and a saved model keeps the code beside its weights
(:data:`CODE_FILE`), so :func:`rebuild` imports that copy, never unpickles, and works after the space file is
gone. This module travels with a published model too (:mod:`hpsearch.pyfunc`): it imports hpsearch's modules
relatively only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpaceError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CODE_FILE", "UserModel", "check_model", "load_code", "rebuild", "summary"]

#: The space file's code, saved beside a user model's weights.
CODE_FILE = "model_code.py"
_CHECK_BATCH = 4

_modules: dict[str, Any] = {}  # the code already imported in this process, by its hash


@dataclass(frozen=True)
class UserModel:
    """The space file's model function as plain data: the file's code, its name as given, the function's name."""

    code: str
    path: str
    function: str

    @classmethod
    def of(cls, function: Callable[..., Any]) -> UserModel:
        """The function of a loaded space file (:func:`hpsearch.space.load_space` checked it is one)."""
        path = function.__code__.co_filename
        return cls(Path(path).read_text(), path, function.__name__)

    def build(self, config: Mapping[str, Any], input_shape: Sequence[int], n_outputs: int) -> nn.Module:
        """Call the function; one line naming the space file's line when it raises or returns no module."""
        return _build(getattr(load_code(self.code, self.path), self.function), self.path, config, input_shape,
                      n_outputs)


def load_code(code: str, filename: str) -> Any:
    """Import ``code`` as a module of its own (once per process); tracebacks name ``filename`` and its lines."""
    key = hashlib.sha256(f"{filename}\0{code}".encode()).hexdigest()
    if key not in _modules:
        name = f"_hpsearch_user_model_{key[:16]}"
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None, origin=filename))
        module.__file__ = filename
        sys.modules[name] = module  # as an import does: dataclasses and pickling look their module up there
        try:
            exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102 - the user's space file, by design
        except BaseException:
            del sys.modules[name]
            raise
        _modules[key] = module
    return _modules[key]


def check_model(config: Any, data: Any, shown: str | None = None) -> None:
    """Before any trial: build the model for one sampled ``config`` (a :class:`~hpsearch.train.TrialConfig`) and
    give it one batch of training examples; a :class:`SpaceError` naming the space file (as ``shown``, the name
    the user gave it) and its line otherwise."""
    try:
        _check(config, data)
    except SpaceError as err:
        where = err.path.replace(config.user_model.path, shown, 1) if shown and err.path else err.path
        raise SpaceError(err.message, field=err.field, path=where) from None


def _check(config: Any, data: Any) -> None:
    import torch

    user = config.user_model
    model = user.build(config.model_config(), data.input_shape, data.n_outputs)
    batch = torch.as_tensor(data.train.X[:_CHECK_BATCH])
    fn = getattr(load_code(user.code, user.path), user.function)
    try:
        with torch.no_grad():
            output = model.eval()(batch)
    except Exception as err:  # noqa: BLE001 - the user's forward: one line naming where it failed
        raise _error(err, user.path, fn, f"the model of {user.function}() failed on a batch of {len(batch)} "
                     f"examples of shape {tuple(batch.shape[1:])}: {type(err).__name__}: {err}") from None
    expected = (len(batch), data.n_outputs)
    got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if got != expected:
        raise SpaceError(f"the model of {user.function}() gives {got} for a batch of {len(batch)} examples of shape "
                         f"{tuple(batch.shape[1:])}; it must give a tensor of shape {expected} (batch, n_outputs)",
                         field="model", path=f"{user.path}:{fn.__code__.co_firstlineno}")


def rebuild(spec: Any, directory: Path) -> nn.Module:
    """The user model of a saved model's spec (:class:`~hpsearch.model.ModelSpec`), from the code saved with it."""
    saved = spec.user_model
    path = Path(directory) / CODE_FILE
    fn = getattr(load_code(path.read_text(), str(path)), saved["function"])
    return _build(fn, str(path), saved["config"], spec.input_shape, spec.n_outputs)


def summary(model: nn.Module, spec: Any) -> str:
    """The architecture of any module, for ``plots/architecture.txt``: torch's own description and the counts."""
    saved = spec.user_model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = ", ".join(f"{k}={v}" for k, v in saved["config"].items())
    return (f"{saved['function']}() of {saved.get('space_file', 'the space file')} for a {spec.task} task: "
            f"input {list(spec.input_shape)} per example, {spec.n_outputs} outputs\n"
            f"config: {config}\n\n{model!r}\n\ntotal parameters: {total:,} ({trainable:,} trainable)\n")


def _build(fn: Callable[..., Any], path: str, config: Mapping[str, Any], input_shape: Sequence[int],
           n_outputs: int) -> nn.Module:
    from torch import nn

    call = f"{fn.__name__}(config, input_shape={tuple(input_shape)}, n_outputs={n_outputs})"
    try:
        model = fn(dict(config), tuple(int(n) for n in input_shape), int(n_outputs))
    except Exception as err:  # noqa: BLE001 - the user's function: one line naming where it failed
        raise _error(err, path, fn, f"{call} raised {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise SpaceError(f"{call} returned {type(model).__name__}; it must return a torch.nn.Module",
                         field="model", path=f"{path}:{fn.__code__.co_firstlineno}")
    return model


def _error(err: BaseException, path: str, fn: Callable[..., Any], message: str) -> SpaceError:
    """A SpaceError at the last line of the space file in ``err``'s traceback (else the function's first)."""
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == path]
    return SpaceError(message, field="model", path=f"{path}:{lines[-1] if lines else fn.__code__.co_firstlineno}")

"""Your own network: the space file's ``model=`` function, loaded, checked, built and described.

The contract: ``build(config, input_shape, n_outputs)`` is a top-level function of the space file; it gets the
trial's values (``config``), one example's shape (``(n_features,)`` for a table after its preprocessing,
``(C, H, W)`` for images) and the number of outputs (the classes, or 1 for binary and regression), and returns
a ``torch.nn.Module`` whose output is ``(batch, n_outputs)``.

The function travels as its source: :class:`UserModel` holds the space file's code and the function's name,
plain data that Ray ships to its workers, and a saved model keeps the code beside its weights
(:data:`CODE_FILE`), so :func:`rebuild` imports that copy, never unpickles, and works after the space file is
gone. This module travels with a published model too (:mod:`hpsearch.model.pyfunc`): it imports nothing of hpsearch.
The check before any trial is :mod:`hpsearch.training.model_check`'s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CODE_FILE", "ModelFunctionError", "UserModel", "load_code", "rebuild", "summary"]

#: The space file's code, saved beside a user model's weights.
CODE_FILE = "model_code.py"

_modules: dict[str, Any] = {}  # the code already imported in this process, by its hash


class ModelFunctionError(ValueError):
    """The model function raised or returned no module: ``path`` is ``FILE:LINE`` of the space file's line.

    Not a :class:`hpsearch.errors.SpaceError` because this module travels with a published model and imports
    nothing of hpsearch; :mod:`hpsearch.training.model_check` turns it into one before any trial.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{path}: model: {message}")
        self.message, self.path = message, path


@dataclass(frozen=True)
class UserModel:
    """The space file's model function as plain data: the file's code, its name as given, the function's name."""

    code: str
    path: str
    function: str

    @classmethod
    def of(cls, function: Callable[..., Any]) -> UserModel:
        """The function of a loaded space file (:func:`hpsearch.space.search.load_space` checked it is one)."""
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
        stand_in = _space_api_stand_in()
        try:
            exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102 - the user's space file, by design
        except BaseException:
            del sys.modules[name]
            raise
        finally:
            if stand_in:
                del sys.modules["hpsearch"]
        _modules[key] = module
    return _modules[key]


def _space_api_stand_in() -> bool:
    """Where hpsearch is not installed (a served model), a stand-in for the space-file API while the stored space
    file runs: its ``from hpsearch import Search, choice, ...`` and ``search = Search(...)`` run and do nothing;
    only its model function is used. Returns whether one was put in place."""
    if "hpsearch" in sys.modules or importlib.util.find_spec("hpsearch") is not None:
        return False
    api = types.ModuleType("hpsearch", "a stand-in for the space-file API: hpsearch is not installed here")
    api.__getattr__ = lambda name: (lambda *args, **kwargs: None)  # Search(...), choice([...]), ...: None
    sys.modules["hpsearch"] = api
    return True


def rebuild(spec: Any, directory: Path) -> nn.Module:
    """The user model of a saved model's spec (:class:`~hpsearch.model.network.ModelSpec`), from the code saved
    with it."""
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
        raise error_at(err, path, fn, f"{call} raised {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise ModelFunctionError(f"{call} returned {type(model).__name__}; it must return a torch.nn.Module",
                                 f"{path}:{fn.__code__.co_firstlineno}")
    return model


def error_at(err: BaseException, path: str, fn: Callable[..., Any], message: str) -> ModelFunctionError:
    """The error at the last line of the space file in ``err``'s traceback (else the function's first)."""
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == path]
    return ModelFunctionError(message, f"{path}:{lines[-1] if lines else fn.__code__.co_firstlineno}")

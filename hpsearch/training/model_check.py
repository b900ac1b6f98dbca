"""Before any trial: the space file's model function built for one sampled configuration and given one batch.

A function that raises, returns no module or gives the wrong output shape is a :class:`SpaceError` naming the
space file and the line in it, exit code 2, before anything is written.
"""

from __future__ import annotations

from typing import Any

from hpsearch.errors import SpaceError
from hpsearch.model.user_model import ModelFunctionError, error_at, load_code

__all__ = ["check_model"]

_CHECK_BATCH = 4


def check_model(config: Any, data: Any, shown: str | None = None) -> None:
    """Before any trial: build the model for one sampled ``config`` (a :class:`~hpsearch.training.fit.TrialConfig`) and
    give it one batch of training examples; a :class:`SpaceError` naming the space file (as ``shown``, the name
    the user gave it) and its line otherwise."""
    try:
        _check(config, data)
    except (SpaceError, ModelFunctionError) as err:
        where = err.path.replace(config.user_model.path, shown, 1) if shown and err.path else err.path
        raise SpaceError(err.message, field="model", path=where) from None


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
        raise error_at(err, user.path, fn, f"the model of {user.function}() failed on a batch of {len(batch)} "
                     f"examples of shape {tuple(batch.shape[1:])}: {type(err).__name__}: {err}") from None
    expected = (len(batch), data.n_outputs)
    got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if got != expected:
        raise SpaceError(f"the model of {user.function}() gives {got} for a batch of {len(batch)} examples of shape "
                         f"{tuple(batch.shape[1:])}; it must give a tensor of shape {expected} (batch, n_outputs)",
                         field="model", path=f"{user.path}:{fn.__code__.co_firstlineno}")

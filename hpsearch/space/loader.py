"""Loading a space file: plain Python that defines a module-level ``search = Search(...)``, imported with
``importlib`` (never ``exec`` into our globals); an error in it names the file and its line.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpsearch.errors import SpaceError
from hpsearch.space.search import Search


def load_space(path: str | Path) -> Search:
    """Load a space file and return its validated ``search``.

    The file is imported with :mod:`importlib` as a module of its own (never ``exec`` into our globals).
    Any mistake becomes a :class:`SpaceError` that names the file, and the line or the field.
    """
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise SpaceError("no such file" if not path.exists() else "is not a file", path=shown)
    if path.suffix != ".py":
        raise SpaceError("a space file must be a Python file ending in .py", path=shown)
    module_name = f"_hpsearch_space_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SpaceError as err:
        err.path = f"{shown}:{_user_line(err, path)}" if _user_line(err, path) else shown
        raise SpaceError(err.message, field=err.field, path=err.path) from None
    except SyntaxError as err:
        raise SpaceError(f"syntax error: {err.msg}", path=f"{shown}:{err.lineno}") from None
    except Exception as err:  # the user's code failed: say where, without our frames
        line = _user_line(err, path)
        where = f"{shown}:{line}" if line else shown
        raise SpaceError(f"{type(err).__name__}: {err}", path=where) from None
    search = getattr(module, "search", None)
    if search is None:
        raise SpaceError("defines no module-level `search`; add search = Search(data=..., params={...})", path=shown)
    if not isinstance(search, Search):
        kind = type(search).__name__
        raise SpaceError(f"`search` must be built with hpsearch.Search(...), but is {kind}", path=shown)
    sys.modules.pop(module_name, None)
    if search.model is not None:
        _check_model_is_here(search.model, module, path)
    return search


def _check_model_is_here(function: Callable[..., Any], module: Any, path: Path) -> None:
    """``model=`` must be a top-level function of this file: its code travels with the trials and the model."""
    here = Path(function.__code__.co_filename).resolve() == path.resolve()
    if not here or getattr(module, function.__name__, None) is not function:
        where = "defined elsewhere" if not here else "not at the top level of the file"
        raise SpaceError(f"must be a function defined at the top level of the space file, "
                         f"def build(config, input_shape, n_outputs), but {function.__qualname__} is {where}",
                         field="model", path=str(path))


def _user_line(err: BaseException, path: Path) -> int | None:
    """The last line of the space file in the error's traceback."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return frames[-1].lineno if frames else None

"""``hpsearch predict``: load a logged model by URI and predict raw rows of a CSV file.

The columns are checked against the model's signature first, so a wrong file is one clear line naming the
missing columns instead of an MLflow traceback. Columns the model does not take (the target, an id) are
dropped, and said so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException

from hpsearch.errors import ConfigError, NotFoundError
from hpsearch.tracking import default_tracking_uri

__all__ = ["load_pyfunc", "predict_csv"]


def predict_csv(model_uri: str, input_csv: Path, output: Path, *, tracking_uri: str | None = None,
                on_event: Callable[[str], None] = print) -> pd.DataFrame:
    """Predict every row of ``input_csv`` and write the predictions (one row per input row) to ``output``."""
    frame = _read_csv(Path(input_csv))
    model = load_pyfunc(model_uri, tracking_uri)
    columns = model.metadata.get_input_schema().input_names()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{input_csv}: the model needs the columns {', '.join(columns)}, but "
                          f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        on_event(f"ignoring the columns the model does not take: {', '.join(map(str, extra))}")
    try:
        predictions = model.predict(frame[columns])
    except MlflowException as err:
        raise ConfigError(f"{input_csv}: does not match the model's signature: {_first_line(err)}") from None
    predictions.to_csv(output, index=False)
    return predictions


def load_pyfunc(model_uri: str, tracking_uri: str | None = None) -> mlflow.pyfunc.PyFuncModel:
    """Load a model (``models:/NAME@best``, ``runs:/ID/pyfunc_model`` or a folder) from the given store."""
    with _store(tracking_uri):
        try:
            return mlflow.pyfunc.load_model(model_uri)
        except (MlflowException, OSError) as err:
            raise NotFoundError(f"cannot load model {model_uri!r}: {_first_line(err)}") from None


@contextlib.contextmanager
def _store(tracking_uri: str | None) -> Iterator[None]:
    """Point MLflow's global tracking and registry URIs at the store for one call, then put them back."""
    uri = tracking_uri or default_tracking_uri()
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfigError(f"{path}: cannot read it as CSV: {_first_line(err)}") from None
    if frame.empty:
        raise ConfigError(f"{path}: has no rows")
    return frame


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

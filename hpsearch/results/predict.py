"""``hpsearch predict``: load a logged model by URI and predict raw rows of a CSV file.

The columns are checked against the model's signature first, so a wrong file is one clear line naming the
missing columns instead of an MLflow traceback. Columns the model does not take (the target, an id) are
ignored, and said so; ``keep`` puts input columns (an id, or all of them) beside the predictions so that they
join back. The predictions go to a file or, without one, as CSV to standard output.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import get_model_name_and_version

from hpsearch.errors import ConfigError, NotFoundError
from hpsearch.tracking.connection import default_tracking_uri, registry_uri_for, tracking_uri_from

__all__ = ["KEEP_ALL", "load_pyfunc", "predict_csv"]

#: ``keep`` value that keeps every input column.
KEEP_ALL = "all"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded file otherwise


def predict_csv(model_uri: str, input_csv: Path, output: Path | None = None, *, keep: Sequence[str] = (),
                tracking_uri: str | None = None, on_event: Callable[[str], None] = print) -> pd.DataFrame:
    """Predict every row of ``input_csv`` and write the predictions (one row per input row) as CSV.

    ``output`` is a file, or standard output when None. ``keep`` names input columns written before the
    predictions (``["all"]``: every input column). Nothing is written when anything is wrong.
    """
    frame = _read_csv(Path(input_csv))
    kept = _kept_columns(frame, keep, input_csv)
    model = load_pyfunc(model_uri, tracking_uri)
    columns = model.metadata.get_input_schema().input_names()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{input_csv}: the model needs the columns {', '.join(columns)}, but "
                          f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    clash = [c for c in kept if c in _output_names(model)]
    if clash:
        raise ConfigError(f"{input_csv}: --keep {clash[0]}: the predictions have a column of that name; rename it "
                          "in the file")
    try:
        predictions = model.predict(frame[columns])
    except MlflowException as err:
        raise ConfigError(f"{input_csv}: {_reason(err)}") from None
    extra = [c for c in frame.columns if c not in columns]
    if extra:  # said once the rows are known to be good: a refused file gets one line, the error
        on_event(f"ignoring the columns the model does not take: {', '.join(map(str, extra))}")
    predictions = pd.concat([frame[kept].reset_index(drop=True), predictions.reset_index(drop=True)], axis=1)
    if output is None:
        _to_stdout(predictions)
    else:
        predictions.to_csv(output, index=False)
    return predictions


def _to_stdout(predictions: pd.DataFrame) -> None:
    """CSV on standard output; a reader that stops early (``| head``) ends the writing, not in a traceback."""
    try:
        predictions.to_csv(sys.stdout, index=False)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail too


def _kept_columns(frame: pd.DataFrame, keep: Sequence[str], input_csv: Path) -> list[str]:
    """The input columns to write beside the predictions; an unknown name is a ConfigError."""
    if KEEP_ALL in keep and KEEP_ALL not in frame.columns:
        return [str(c) for c in frame.columns]
    for name in keep:
        if name not in frame.columns:
            raise ConfigError(f"{input_csv}: --keep {name}: no such column; the file has "
                              f"{', '.join(map(str, frame.columns))} (or use --keep {KEEP_ALL})")
    return list(dict.fromkeys(keep))


def _output_names(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    schema = model.metadata.get_output_schema()
    return schema.input_names() if schema is not None else []


def _reason(err: MlflowException) -> str:
    """The model's own message for rows it cannot read (with the file's line), else MLflow's reason."""
    row = getattr(err, "row", None)
    if isinstance(row, int) and getattr(err, "column", None) is not None:
        return f"{err.message} (line {row + 2} of the file)"  # row 0 is the line after the header
    reason = str(err).rsplit("Error: ", 1)[-1]  # MLflow's message quotes the whole table before the reason
    return f"does not match the model's signature: {_first_line(reason)}"


def load_pyfunc(model_uri: str, tracking_uri: str | None = None) -> mlflow.pyfunc.PyFuncModel:
    """Load a model (``models:/NAME@best``, ``runs:/ID/pyfunc_model`` or a folder) from the given store.

    The files are downloaded with an explicit tracking and registry URI (no global MLflow state is changed),
    then loaded from the local copy.
    """
    uri = tracking_uri_from(tracking_uri) or default_tracking_uri()
    try:
        if Path(model_uri).is_dir():
            return mlflow.pyfunc.load_model(model_uri)
        with tempfile.TemporaryDirectory() as directory:
            local = mlflow.artifacts.download_artifacts(artifact_uri=_artifact_uri(model_uri, uri),
                                                        dst_path=directory, tracking_uri=uri)
            return mlflow.pyfunc.load_model(local)
    except (MlflowException, OSError) as err:
        raise NotFoundError(f"cannot load model {model_uri!r} from {uri}: {_first_line(err)}") from None


def _artifact_uri(model_uri: str, tracking_uri: str) -> str:
    """A registry URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) resolved with an explicit client.

    MLflow's own resolution reads the global registry URI, which would be another store than the one asked for.
    """
    if not model_uri.startswith("models:/"):
        return model_uri
    client = MlflowClient(tracking_uri, registry_uri=registry_uri_for(tracking_uri))
    found = get_model_name_and_version(client, model_uri)
    if len(found) == 1:  # models:/m-ID, a logged model of the tracking store
        return model_uri
    return client.get_model_version_download_uri(*found)


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


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

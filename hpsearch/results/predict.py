"""``hpsearch predict``: load a logged model by URI and predict raw rows of a CSV file.

The columns are checked against the model's signature first, so a wrong file is one clear line naming the
missing columns instead of an MLflow traceback. Columns the model does not take (the target, an id) are
ignored, and said so; ``keep`` puts input columns (an id, or all of them) beside the predictions so that they
join back. The predictions go to a file or, without one, as CSV to standard output.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import get_model_name_and_version

from hpsearch.errors import ConfigError, NotFoundError
from hpsearch.tracking.connection import default_tracking_uri, registry_uri_for, tracking_uri_from

__all__ = ["CHUNK_ROWS", "KEEP_ALL", "load_pyfunc", "predict_csv"]

#: ``keep`` value that keeps every input column.
KEEP_ALL = "all"
#: Rows read, predicted and written at a time (three chunks at once: one read, one predicted, one written): a
#: few tens of MB for a table of twenty columns, more where a text column of many values is one-hot encoded.
CHUNK_ROWS = 50_000

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded file otherwise


def predict_csv(model_uri: str, input_csv: Path, output: Path | None = None, *, keep: Sequence[str] = (),
                tracking_uri: str | None = None, on_event: Callable[[str], None] = print) -> int:
    """Predict every row of ``input_csv`` and write the predictions (one row per input row) as CSV; return how
    many rows were predicted.

    ``output`` is a file, or standard output when None. ``keep`` names input columns written before the
    predictions (``["all"]``: every input column). The file is read, predicted and written :data:`CHUNK_ROWS`
    rows at a time, so that memory stays bounded whatever its size; the predictions go to a temporary file
    first, so that nothing is written when anything is wrong.
    """
    kept = _kept_columns(_read_header(Path(input_csv)), keep, input_csv)
    model = load_pyfunc(model_uri, tracking_uri)
    from hpsearch.model.pyfunc import NUMBER  # with the model's code: torch, loaded by the model anyway

    types = (model.metadata.metadata or {}).get("hpsearch_input_types") or {}
    chunks = _read_csv(Path(input_csv), _as_text(types, kept))
    kept_numbers = [name for name in kept if types.get(name) == NUMBER]  # read as text, given to the model as numbers
    first = next(chunks)
    shape = model.metadata.metadata.get("hpsearch_input_shape") if model.metadata.metadata else None
    if shape is not None:  # a model of images or sequences: one example a row, its numbers in order
        columns = [c for c in first.columns if c not in kept or KEEP_ALL in keep]
        _examples(first[columns], shape, input_csv)  # the file's width checked before any prediction
    else:
        columns = _input_columns(model)
        missing = [c for c in columns if c not in first.columns]
        if missing:
            raise ConfigError(f"{input_csv}: the model needs the columns {', '.join(columns)}, but "
                              f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    clash = [c for c in kept if c in _output_names(model)]
    if clash:
        raise ConfigError(f"{input_csv}: --keep {clash[0]}: the predictions have a column of that name; rename it "
                          "in the file")
    handle, name = tempfile.mkstemp(dir=output.parent if output is not None else None, prefix=".predictions-",
                                    suffix=".csv")
    count = 0
    try:  # the next chunk is read, and the last one written, while this one is predicted: 2 cores, 3 steps
        with (os.fdopen(handle, "w", newline="") as written, ThreadPoolExecutor(1, "hpsearch-read") as reader,
              ThreadPoolExecutor(1, "hpsearch-write") as writer):
            frame, writing = first, None
            while frame is not None:
                ahead = reader.submit(next, chunks, None)
                model_input = (_examples(frame[columns], shape, input_csv) if shape is not None
                               else _as_numbers(frame[columns], kept_numbers))
                try:
                    predictions = model.predict(model_input)
                except MlflowException as err:
                    raise ConfigError(f"{input_csv}: {_reason(err, count)}") from None
                predictions = pd.concat([frame[kept].reset_index(drop=True), predictions.reset_index(drop=True)],
                                        axis=1)
                if writing is not None:
                    writing.result()  # one chunk written at a time, in order
                writing = writer.submit(predictions.to_csv, written, index=False, header=count == 0)
                count += len(frame)
                frame = ahead.result()
            if writing is not None:
                writing.result()
    except BaseException:
        os.unlink(name)
        raise
    extra = [c for c in first.columns if c not in columns]
    if extra:  # said once the rows are known to be good: a refused file gets one line, the error
        on_event(f"ignoring the columns the model does not take: {', '.join(map(str, extra))}")
    if output is None:
        _to_stdout(Path(name))
    else:
        os.replace(name, output)
    return count


def _to_stdout(written: Path) -> None:
    """The CSV file on standard output, then removed; a reader that stops early (``| head``) ends the writing,
    not in a traceback."""
    try:
        with written.open() as source:
            shutil.copyfileobj(source, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail too
    finally:
        written.unlink()


def _kept_columns(frame: pd.DataFrame, keep: Sequence[str], input_csv: Path) -> list[str]:
    """The input columns to write beside the predictions; an unknown name is a ConfigError."""
    if KEEP_ALL in keep and KEEP_ALL not in frame.columns:
        return [str(c) for c in frame.columns]
    for name in keep:
        if name not in frame.columns:
            raise ConfigError(f"{input_csv}: --keep {name}: no such column; the file has "
                              f"{', '.join(map(str, frame.columns))} (or use --keep {KEEP_ALL})")
    return list(dict.fromkeys(keep))


def _input_columns(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """The raw columns the model reads: its metadata's (an input schema of named columns, for older models)."""
    columns = (model.metadata.metadata or {}).get("hpsearch_input_columns")
    if columns is not None:
        return list(columns)
    schema = model.metadata.get_input_schema()
    return [str(name) for name in schema.input_names()] if schema is not None else []


def _examples(frame: pd.DataFrame, shape: list[int], input_csv: Path) -> np.ndarray:
    """The rows of a CSV file as examples of ``shape`` (an image's pixels in C, H, W order, a row each)."""
    size = math.prod(shape)
    if frame.shape[1] != size:
        raise ConfigError(f"{input_csv}: the model takes examples of shape {tuple(shape)}, {size} numbers a row, "
                          f"but the file has {frame.shape[1]} columns (--keep names a column that is not one)")
    try:
        return frame.to_numpy(dtype=np.float32).reshape(-1, *shape)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{input_csv}: the model takes numbers only: {_first_line(err)}") from None


def _output_names(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    schema = model.metadata.get_output_schema()
    return schema.input_names() if schema is not None else []


def _reason(err: MlflowException, start: int) -> str:
    """The model's own message for rows it cannot read (with the file's line), else MLflow's reason.

    ``start`` is the position in the file of the chunk's first row: the examples of an array are counted from
    it (a table's rows are named by their index, which runs on across the chunks)."""
    row = getattr(err, "row", None)
    if isinstance(row, int) and getattr(err, "column", None) is not None:
        return f"{err.message} (line {row + 2} of the file)"  # row 0 is the line after the header
    reason = str(err).rsplit("Error: ", 1)[-1]  # MLflow's message quotes the whole table before the reason
    reason = re.sub(r"^example (\d+):", lambda found: f"example {int(found[1]) + start}:", reason)
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


def _read_header(path: Path) -> pd.DataFrame:
    """The file's columns (no rows): a file that is missing or not CSV is refused before the model loads."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return pd.read_csv(path, nrows=0)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfigError(f"{path}: cannot read it as CSV: {_first_line(err)}") from None


def _as_text(types: dict[str, str], kept: Sequence[str]) -> dict[str, type]:
    """The columns read as text whatever a chunk holds: the model's text inputs (``types``), as training read
    them from the whole file (a chunk of digits only would otherwise read ``01`` as the number 1), and the kept
    columns, written back as they are in the file (``3``, not ``3.0`` in a chunk where the column has a gap)."""
    from hpsearch.model.pyfunc import TEXT

    return {**{name: str for name, kind in types.items() if kind == TEXT}, **{name: str for name in kept}}


def _as_numbers(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its columns ``names`` (numeric inputs read as text) turned into numbers, as fast as
    ``read_csv`` reads them; a column with a value that is not a number stays text, for the model's own error
    naming the column and the row."""
    numbers = {}
    for name in names:
        with contextlib.suppress(ValueError, TypeError):
            numbers[name] = pd.to_numeric(frame[name])
    return frame.assign(**numbers) if numbers else frame


def _read_csv(path: Path, text: dict[str, type]) -> Iterator[pd.DataFrame]:
    """The file's rows, :data:`CHUNK_ROWS` at a time (their index runs on: the row's position in the file), the
    ``text`` columns read as text; the first chunk is read here, so that an empty file is refused before any
    prediction."""
    try:
        reader = pd.read_csv(path, chunksize=CHUNK_ROWS, dtype=text)
        first = next(reader, None)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfigError(f"{path}: cannot read it as CSV: {_first_line(err)}") from None
    if first is None or first.empty:
        raise ConfigError(f"{path}: has no rows")
    return _chunks(path, first, reader)


def _chunks(path: Path, first: pd.DataFrame, reader: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield first
    try:
        yield from reader
    except (ValueError, pd.errors.ParserError) as err:
        raise ConfigError(f"{path}: cannot read it as CSV: {_first_line(err)}") from None


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

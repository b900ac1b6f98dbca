"""The model a search hands out: an ``mlflow.pyfunc`` model that takes raw rows and returns predictions.

The fitted preprocessing is not pickled into the model. Its fitted numbers (medians, scaler means and scales,
the most frequent categories, the one-hot categories) are written as JSON by :func:`preprocessing_state` and
applied again by :func:`transform` (:mod:`.features`) with numpy, so loading a model reads only JSON, a
``state_dict`` (``torch.load(weights_only=True)``) and this module's source: MLflow's "models from code"
(:data:`CODE_FILE`) stores the source file instead of a cloudpickle of the Python object.

Rows come in as users have them: :func:`coerce_input` reads each column the model takes whatever its dtype
(int64 or float64, pandas' nullable or Arrow-backed dtypes, text, a column null in every row), in any order,
ignores extra columns, and names the column and the row of a value it cannot read or an infinite number
(:class:`InputError`: HTTP 400 from MLflow's scoring server). MLflow's schema enforcement would refuse an int64
column declared ``double``, and its scoring server every CSV request to a schema of ``Any`` columns, so the
signature declares no input columns: the model's metadata lists them, with their kinds.

The model loads where hpsearch is not installed: this module and the modules it imports relatively travel
with the model as the package :data:`CODE_PACKAGE` (MLflow's ``code_paths``), so this module imports its
hpsearch siblings relatively only, and nothing of hpsearch absolutely.

Predictions come back as a DataFrame: ``prediction`` (the class label, or the number for regression) and,
for classification, one ``probability_<class>`` column per class.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, Schema, TensorSpec

# relative imports only: these modules travel with the model under another package name (see CODE_PACKAGE)
from .columns import input_types
from .ensemble import combine, members_of, most_probable
from .features import transform
from .network import ModelSpec, load_model

if TYPE_CHECKING:
    import torch

__all__ = [
    "CODE_FILE",
    "CODE_PACKAGE",
    "PREPROCESSING_FILE",
    "HpsearchModel",
    "InputError",
    "coerce_input",
    "input_example",
    "input_kinds",
    "input_metadata",
    "predict_array",
    "predict_frame",
    "predict_rows",
    "signature",
    "transform",
]

#: The models-from-code file MLflow stores with every model (it builds :class:`HpsearchModel`).
CODE_FILE = Path(__file__).with_name("entry.py")
#: The name this module's package has inside a saved model (``code/hpsearch_model/``): not ``hpsearch``, so
#: that the copy never hides an installed hpsearch in the process that loads the model.
CODE_PACKAGE = "hpsearch_model"
PREPROCESSING_FILE = "preprocessing.json"
#: Column kinds of :func:`input_kinds`, named as MLflow names types: what :func:`coerce_input` makes of a
#: column's raw values (a kind it does not know is passed on as it comes, for :func:`transform` to read).
NUMBER, TEXT = "double", "string"

_logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ raw input
class InputError(MlflowException):
    """Rows the model cannot read: a column it needs is missing, or a value is not what its column holds.

    An :class:`~mlflow.exceptions.MlflowException` with ``INVALID_PARAMETER_VALUE``, so that MLflow's scoring
    server answers HTTP 400 with this message. ``column`` and ``row`` (the row's index label) say where.
    """

    def __init__(self, message: str, *, column: str | None = None, row: Any = None) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
        self.column = column
        self.row = row


def input_kinds(state: dict[str, Any]) -> dict[str, str]:
    """The raw columns the model reads, in the training table's order, each with its kind.

    NUMBER and TEXT are read by :func:`coerce_input`; the column plan's other kinds (``boolean``, ``datetime``)
    pass through to :func:`hpsearch.model.columns.apply_plan`, which reads them itself.
    """
    if "plan" in state:
        return dict(input_types(state["plan"]))
    kinds = {c["name"]: NUMBER for c in state["numeric"]} | {c["name"]: TEXT for c in state["categorical"]}
    return {name: kinds[name] for name in state["columns"] if name in kinds}


def coerce_input(state: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the model reads, from rows as users have them: numbers as float64, text as str or None.

    Any dtype is accepted where its values fit the column: int64 or float64, pandas' nullable (``Int64``,
    ``boolean``, ``string``) and Arrow-backed dtypes, numbers written as text, a column null in every row.
    Columns may come in any order; extra columns are ignored (and logged). A missing column or a value that
    is not a number in a numeric column is an :class:`InputError` naming the column (and the row).
    """
    frame = frame.rename(columns=str)
    kinds = input_kinds(state)
    missing = [name for name in kinds if name not in frame.columns]
    if missing:
        raise InputError(f"the model needs the column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))}, missing from the input", column=missing[0])
    extra = [name for name in frame.columns if name not in kinds]
    if extra:
        _logger.warning("ignoring the columns the model does not take: %s", ", ".join(extra))
    categories = {c["name"]: {str(v) for v in c["categories"]} for c in state["categorical"]}
    columns = {}
    for name, kind in kinds.items():
        raw = frame[name]
        if kind == NUMBER:
            columns[name] = _numbers(name, raw)
        elif kind == TEXT:
            columns[name] = _text(raw, categories.get(name, set()))
        else:
            columns[name] = raw
    return pd.DataFrame(columns, index=frame.index)


def _numbers(name: str, raw: pd.Series) -> pd.Series:
    """A column as float64 (missing as NaN); a value that does not read as a number is an InputError."""
    if pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        numbers = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        _refuse(name, raw, np.isinf(numbers), "is not a finite number")
        return pd.Series(numbers, index=raw.index)
    values = raw.astype(object)
    blank = values.isna().to_numpy() | np.array([isinstance(v, str) and not v.strip() for v in values], bool)
    numbers = pd.to_numeric(values.where(~blank, None), errors="coerce").to_numpy(dtype=np.float64,
                                                                                 na_value=np.nan)
    _refuse(name, values, ~blank & np.isnan(numbers), "is not a number")
    _refuse(name, values, np.isinf(numbers), "is not a finite number")
    return pd.Series(numbers, index=raw.index)


def _refuse(name: str, values: pd.Series, bad: np.ndarray, why: str) -> None:
    """An InputError naming the column, the row and the value of the first ``bad`` one, if any.

    Infinite numbers (JSON's ``1e400``) are refused: a network gives NaN for them, not a prediction; a missing
    value (NaN, None, an empty cell) is imputed.
    """
    if bad.any():
        at = int(np.argmax(bad))
        row, value = values.index[at], values.iloc[at]
        row = row.item() if isinstance(row, np.generic) else row
        value = value.item() if isinstance(value, np.generic) else value
        raise InputError(f"column {name!r}, row {row}: {value!r} {why}", column=name, row=row)


def _text(raw: pd.Series, categories: set[str]) -> pd.Series:
    """A column as str values (None where missing), as the training categories were written.

    A whole number that arrives as a float (1.0, from a column with missing values) reads as "1" unless "1.0"
    is itself a training category.
    """
    def one(value: Any) -> str | None:
        if value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value)):
            return None
        if isinstance(value, bool | np.bool_):
            return str(bool(value))
        if isinstance(value, float | np.floating) and float(value).is_integer() and str(value) not in categories:
            return str(int(value))
        return str(value)

    codes, values = pd.factorize(raw)  # each distinct value once (no Python object per row); missing as -1
    texts = np.array([*(one(v) for v in values), None], dtype=object)
    return pd.Series(texts[codes], index=raw.index, dtype=object)


def predict_frame(model: torch.nn.Module, spec: ModelSpec, state: dict[str, Any], frame: pd.DataFrame,
                  memo: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Raw rows in, predictions out: class labels and probabilities, or numbers in the target's units.

    ``memo`` keeps the features of ``frame`` by preprocessing, for networks that predict the same rows: the members
    of an ensemble, or the trials an ensemble is chosen from, share their preprocessing, and turning raw rows into
    features costs more than a small network's forward pass (a million rows: 0.8 s against 0.3 s).
    """
    key = json.dumps(state, sort_keys=True) if memo is not None else ""
    features = memo.get(key) if memo is not None else None
    if features is None:
        features = transform(state, coerce_input(state, frame))
        if memo is not None:
            memo[key] = features
    return _predictions(model, spec, features, frame.index)


def predict_array(model: torch.nn.Module, spec: ModelSpec, state: dict[str, Any], examples: Any) -> pd.DataFrame:
    """Examples of the shape the model was trained on (``state["tensor_shape"]``, images), predictions out."""
    shape = tuple(state["tensor_shape"])
    array = np.asarray(examples, dtype=np.float32)
    if array.ndim == 2 and array.shape[1] == math.prod(shape):  # one example a row (a table, a CSV file)
        array = array.reshape(-1, *shape)
    if array.shape[1:] != shape:
        raise InputError(f"the model takes an array of shape (n, {', '.join(map(str, shape))}) or one example of "
                         f"{math.prod(shape)} numbers a row, but got {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"example {int(np.argmax(~np.isfinite(array).reshape(len(array), -1).all(axis=1)))}: "
                         "holds NaN or infinite numbers; the model takes finite numbers")
    return _predictions(model, spec, array, pd.RangeIndex(len(array)))


def _predictions(model: torch.nn.Module, spec: ModelSpec, features: np.ndarray, index: pd.Index) -> pd.DataFrame:
    import torch  # here, not above: publishing a model (signature, input example) needs no torch

    with torch.no_grad():
        outputs = model(torch.as_tensor(features))
    if spec.task == "regression":
        values = spec.to_units(outputs.squeeze(1).double().numpy())  # a log1p target read back too
        return pd.DataFrame({"prediction": values}, index=index)
    if spec.task == "binary":
        positive = torch.sigmoid(outputs.squeeze(1)).double().numpy()
        probabilities = np.stack([1 - positive, positive], axis=1)
    else:
        probabilities = torch.softmax(outputs, dim=1).double().numpy()
    result = pd.DataFrame({"prediction": most_probable(spec.classes, probabilities, index)})
    for i, label in enumerate(spec.classes):
        result[f"probability_{label}"] = probabilities[:, i]
    return result


# ------------------------------------------------------------------------------------------ pyfunc model
class HpsearchModel(PythonModel):
    """An MLP trained by hpsearch plus its preprocessing; ``predict`` takes a DataFrame of raw rows.

    A model of several members (:mod:`hpsearch.model.ensemble`) predicts with each, from the same raw rows, and
    returns their weighted average; the first member's ``model``, ``spec`` and ``state`` stand for the whole.
    """

    def load_context(self, context: Any) -> None:
        directory = Path(context.artifacts["model"])
        self.members = [(*load_model(folder), json.loads((folder / PREPROCESSING_FILE).read_text()), weight)
                        for folder, weight in members_of(directory)]
        self.model, self.spec, self.state, _ = self.members[0]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        memo: dict[str, np.ndarray] = {}  # the rows' features, worked out once for members that share them
        predictions = [predict_rows(model, spec, state, model_input, memo) for model, spec, state, _ in self.members]
        if len(predictions) == 1:
            return predictions[0]
        return combine(predictions, [weight for *_, weight in self.members], self.spec.classes)


def predict_rows(model: torch.nn.Module, spec: ModelSpec, state: dict[str, Any], model_input: Any,
                 memo: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One network's predictions from raw rows (or, for a model of images, from an array of examples); ``memo``:
    see :func:`predict_frame`."""
    if "tensor_shape" in state:  # examples used as given (images): a numpy array of their shape
        return predict_array(model, spec, state, model_input)
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame(model_input, columns=list(input_kinds(state)))
    return predict_frame(model, spec, state, model_input, memo)


def signature(state: dict[str, Any], spec: ModelSpec) -> ModelSignature:
    """Outputs: prediction (+ probabilities), typed. Inputs: a float32 array for a model of images; none
    declared for a table, whose columns and their kinds are in :func:`input_metadata`.

    A table's model reads each column itself (:func:`coerce_input`), and no input schema of MLflow's fits raw
    rows: with ``double`` MLflow refuses an int64 column ("Can not safely convert int64 to float64"), with
    ``long`` a float64 one, with ``string`` a column null in every row; and with MLflow's ``Any`` type, its
    scoring server refuses every ``text/csv`` request (it reads CSV with the schema's pandas types, which ``Any``
    has none of).
    """
    if "tensor_shape" in state:  # images: a float32 array (n, C, H, W)
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *state["tensor_shape"]))])
    else:
        inputs = None
    if spec.task == "regression":
        return ModelSignature(inputs, Schema([ColSpec("double", "prediction")]))
    label_type = "long" if all(isinstance(c, int) and not isinstance(c, bool) for c in spec.classes) else "string"
    outputs = [ColSpec(label_type, "prediction"), *(ColSpec("double", f"probability_{c}") for c in spec.classes)]
    return ModelSignature(inputs, Schema(outputs))


def input_metadata(state: dict[str, Any]) -> dict[str, Any]:
    """What the signature leaves out, for the model's MLmodel file: the input columns in the training table's
    order, and each one's type."""
    if "tensor_shape" in state:
        return {"hpsearch_input_shape": list(state["tensor_shape"])}
    kinds = input_kinds(state)
    return {"hpsearch_input_columns": list(kinds), "hpsearch_input_types": kinds}  # MLmodel sorts the types


def input_example(state: dict[str, Any]) -> pd.DataFrame | np.ndarray:
    """Two raw rows: typical values (median, most frequent) and one with every value missing; for a model of
    images, two examples of zeros."""
    if "tensor_shape" in state:
        return np.zeros((2, *state["tensor_shape"]), dtype=np.float32)
    kinds = input_kinds(state)
    if "plan" in state:  # a typical raw value of each column, as the training rows had it
        typical = state["plan"]["examples"]
        missing = {name: {NUMBER: math.nan, TEXT: None}.get(kind, typical[name]) for name, kind in kinds.items()}
    else:
        typical = {c["name"]: c["fill"] for c in state["numeric"]}
        typical |= {c["name"]: str(c["fill"]) for c in state["categorical"]}
        missing = {c["name"]: math.nan for c in state["numeric"]} | {c["name"]: None for c in state["categorical"]}
    return pd.DataFrame([typical, missing], columns=list(kinds))

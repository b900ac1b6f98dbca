"""The model a search hands out: an ``mlflow.pyfunc`` model that takes raw rows and returns predictions.

The fitted scikit-learn preprocessing is not pickled into the model. Its fitted numbers (medians, scaler
means and scales, the most frequent categories, the one-hot categories) are written as JSON by
:func:`preprocessing_state` and applied again by :func:`transform` with numpy, so loading a model reads only
JSON, a ``state_dict`` (``torch.load(weights_only=True)``) and this module's source: MLflow's "models from
code" (:data:`CODE_FILE`) stores the source file instead of a cloudpickle of the Python object.

Rows come in as users have them: :func:`coerce_input` reads each column the model takes whatever its dtype
(int64 or float64, pandas' nullable or Arrow-backed dtypes, text, a column null in every row), in any order,
ignores extra columns, and names the column and the row of a value it cannot read (:class:`InputError`).
MLflow's schema enforcement would refuse an int64 column declared ``double``, so the signature declares every
input column by name with MLflow's ``Any`` type, and records each column's kind in the model's metadata.

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
from mlflow.types.schema import AnyType, ColSpec, Schema, TensorSpec

# relative imports only: these modules travel with the model under another package name (see CODE_PACKAGE)
from .columns import apply_plan, input_types
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
        return pd.Series(raw.to_numpy(dtype=np.float64, na_value=np.nan), index=raw.index)
    values = raw.astype(object)
    blank = values.isna().to_numpy() | np.array([isinstance(v, str) and not v.strip() for v in values], bool)
    numbers = pd.to_numeric(values.where(~blank, None), errors="coerce").to_numpy(dtype=np.float64,
                                                                                 na_value=np.nan)
    bad = ~blank & np.isnan(numbers)
    if bad.any():
        at = int(np.argmax(bad))
        row, value = raw.index[at], values.iloc[at]
        row = row.item() if isinstance(row, np.generic) else row
        raise InputError(f"column {name!r}, row {row}: {value!r} is not a number", column=name, row=row)
    return pd.Series(numbers, index=raw.index)


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

    codes, values = pd.factorize(raw.astype(object))  # each distinct value once; missing as -1
    texts = np.array([*(one(v) for v in values), None], dtype=object)
    return pd.Series(texts[codes], index=raw.index, dtype=object)


# --------------------------------------------------------------------------------------------- preprocessing
def transform(state: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Apply the preprocessing to raw rows, as the fitted ColumnTransformer does: float32 features.

    First the column plan (:func:`hpsearch.model.columns.apply_plan`: ids and empty columns left out, dates as
    numbers, booleans as 0/1, rare text values as one). Numeric columns: missing -> median, then standardised.
    Text columns: missing -> most frequent value, then one-hot over the categories seen in training (an unseen
    value is all zeros, ``handle_unknown="ignore"``).
    """
    if "plan" in state:  # models published before the plan existed read their columns as they are
        frame = apply_plan(state["plan"], frame)
    blocks = []
    for column in state["numeric"]:
        values = pd.to_numeric(frame[column["name"]], errors="coerce").to_numpy(dtype=np.float64)
        values = np.where(np.isnan(values), column["fill"], values)
        blocks.append(((values - column["mean"]) / column["scale"])[:, None])
    for column in state["categorical"]:
        raw = frame[column["name"]]
        values = np.where(raw.isna().to_numpy(), str(column["fill"]), raw.astype(str).to_numpy())
        categories = np.asarray([str(c) for c in column["categories"]])
        blocks.append((values[:, None] == categories[None, :]).astype(np.float64))
    return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((len(frame), 0), np.float32)


def predict_frame(model: torch.nn.Module, spec: ModelSpec, state: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """Raw rows in, predictions out: class labels and probabilities, or numbers in the target's units."""
    return _predictions(model, spec, transform(state, coerce_input(state, frame)), frame.index)


def predict_array(model: torch.nn.Module, spec: ModelSpec, state: dict[str, Any], examples: Any) -> pd.DataFrame:
    """Examples of the shape the model was trained on (``state["tensor_shape"]``, images), predictions out."""
    shape = tuple(state["tensor_shape"])
    array = np.asarray(examples, dtype=np.float32)
    if array.shape[1:] != shape:
        raise InputError(f"the model takes an array of shape (n, {', '.join(map(str, shape))}), "
                         f"but got {array.shape}")
    return _predictions(model, spec, array, pd.RangeIndex(len(array)))


def _predictions(model: torch.nn.Module, spec: ModelSpec, features: np.ndarray, index: pd.Index) -> pd.DataFrame:
    import torch  # here, not above: publishing a model (signature, input example) needs no torch

    with torch.no_grad():
        outputs = model(torch.as_tensor(features))
    if spec.task == "regression":
        values = outputs.squeeze(1).double().numpy() * spec.target_std + spec.target_mean
        return pd.DataFrame({"prediction": values}, index=index)
    if spec.task == "binary":
        positive = torch.sigmoid(outputs.squeeze(1)).double().numpy()
        probabilities = np.stack([1 - positive, positive], axis=1)
    else:
        probabilities = torch.softmax(outputs, dim=1).double().numpy()
    labels = np.asarray(spec.classes, dtype=object)[probabilities.argmax(axis=1)]
    result = pd.DataFrame({"prediction": list(labels)}, index=index)
    for i, label in enumerate(spec.classes):
        result[f"probability_{label}"] = probabilities[:, i]
    return result


# ------------------------------------------------------------------------------------------ pyfunc model
class HpsearchModel(PythonModel):
    """An MLP trained by hpsearch plus its preprocessing; ``predict`` takes a DataFrame of raw rows."""

    def load_context(self, context: Any) -> None:
        directory = Path(context.artifacts["model"])
        self.model, self.spec = load_model(directory)
        self.state = json.loads((directory / PREPROCESSING_FILE).read_text())

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if "tensor_shape" in self.state:  # examples used as given (images): a numpy array of their shape
            return predict_array(self.model, self.spec, self.state, model_input)
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input, columns=list(input_kinds(self.state)))
        return predict_frame(self.model, self.spec, self.state, model_input)


def signature(state: dict[str, Any], spec: ModelSpec) -> ModelSignature:
    """Inputs: the original columns by name. Outputs: prediction (+ probabilities), typed.

    Input columns are MLflow's ``Any``: with ``double`` MLflow refuses an int64 column ("Can not safely convert
    int64 to float64"), with ``long`` a float64 one, with ``string`` a column null in every row; the model
    reads each column itself (:func:`coerce_input`). Each column's kind is in :func:`input_metadata`.
    """
    if "tensor_shape" in state:  # images: a float32 array (n, C, H, W)
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *state["tensor_shape"]))])
    else:
        inputs = Schema([ColSpec(AnyType(), name) for name in input_kinds(state)])
    if spec.task == "regression":
        return ModelSignature(inputs, Schema([ColSpec("double", "prediction")]))
    label_type = "long" if all(isinstance(c, int) and not isinstance(c, bool) for c in spec.classes) else "string"
    outputs = [ColSpec(label_type, "prediction"), *(ColSpec("double", f"probability_{c}") for c in spec.classes)]
    return ModelSignature(inputs, Schema(outputs))


def input_metadata(state: dict[str, Any]) -> dict[str, Any]:
    """What the signature's ``Any`` leaves out, for the model's MLmodel file: each input column's type."""
    if "tensor_shape" in state:
        return {"hpsearch_input_shape": list(state["tensor_shape"])}
    return {"hpsearch_input_types": input_kinds(state)}


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

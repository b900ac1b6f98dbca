"""The model a search hands out: an ``mlflow.pyfunc`` model that takes raw rows and returns predictions.

The fitted scikit-learn preprocessing is not pickled into the model. Its fitted numbers (medians, scaler
means and scales, the most frequent categories, the one-hot categories) are written as JSON by
:func:`preprocessing_state` and applied again by :func:`transform` with numpy, so loading a model reads only
JSON, a ``state_dict`` (``torch.load(weights_only=True)``) and this module's source: MLflow's "models from
code" (:data:`CODE_FILE`) stores the source file instead of a cloudpickle of the Python object.

Predictions come back as a DataFrame: ``prediction`` (the class label, or the number for regression) and,
for classification, one ``probability_<class>`` column per class.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, Schema

from hpsearch.columns import apply_plan, input_types
from hpsearch.dataset import preprocessing_state
from hpsearch.model import ModelSpec, load_model

if TYPE_CHECKING:
    import torch

__all__ = [
    "CODE_FILE",
    "PREPROCESSING_FILE",
    "HpsearchModel",
    "input_example",
    "predict_frame",
    "preprocessing_state",
    "signature",
    "transform",
]

#: The models-from-code file MLflow stores with every model (it builds :class:`HpsearchModel`).
CODE_FILE = Path(__file__).with_name("_pyfunc_code.py")
PREPROCESSING_FILE = "preprocessing.json"


# --------------------------------------------------------------------------------------------- preprocessing
def transform(state: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Apply the preprocessing to raw rows, as the fitted ColumnTransformer does: float32 features.

    First the column plan (:func:`hpsearch.columns.apply_plan`: ids and empty columns left out, dates as
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
    import torch  # here, not above: publishing a model (signature, input example) needs no torch

    with torch.no_grad():
        outputs = model(torch.as_tensor(transform(state, frame)))
    if spec.task == "regression":
        values = outputs.squeeze(1).double().numpy() * spec.target_std + spec.target_mean
        return pd.DataFrame({"prediction": values}, index=frame.index)
    if spec.task == "binary":
        positive = torch.sigmoid(outputs.squeeze(1)).double().numpy()
        probabilities = np.stack([1 - positive, positive], axis=1)
    else:
        probabilities = torch.softmax(outputs, dim=1).double().numpy()
    labels = np.asarray(spec.classes, dtype=object)[probabilities.argmax(axis=1)]
    result = pd.DataFrame({"prediction": list(labels)}, index=frame.index)
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
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input, columns=self.state["columns"])
        return predict_frame(self.model, self.spec, self.state, model_input)


def signature(state: dict[str, Any], spec: ModelSpec) -> ModelSignature:
    """Inputs: the original columns (numbers as double, text as string). Outputs: prediction (+ probabilities)."""
    kinds = {c["name"]: "double" for c in state["numeric"]} | {c["name"]: "string" for c in state["categorical"]}
    if "plan" in state:
        kinds = dict(input_types(state["plan"]))
    inputs = Schema([ColSpec(kinds[name], name) for name in state["columns"] if name in kinds])
    if spec.task == "regression":
        return ModelSignature(inputs, Schema([ColSpec("double", "prediction")]))
    label_type = "long" if all(isinstance(c, int) and not isinstance(c, bool) for c in spec.classes) else "string"
    outputs = [ColSpec(label_type, "prediction"), *(ColSpec("double", f"probability_{c}") for c in spec.classes)]
    return ModelSignature(inputs, Schema(outputs))


def input_example(state: dict[str, Any]) -> pd.DataFrame:
    """Two raw rows: typical values (median, most frequent) and one with every value missing."""
    typical = {c["name"]: c["fill"] for c in state["numeric"]}
    typical |= {c["name"]: str(c["fill"]) for c in state["categorical"]}
    missing = {c["name"]: math.nan for c in state["numeric"]} | {c["name"]: None for c in state["categorical"]}
    if "plan" in state:  # the raw columns: a typical value of each, as the training rows had it
        typical = state["plan"]["examples"]
        blank = {"double": math.nan, "string": None}
        missing = {name: blank.get(kind, typical[name]) for name, kind in input_types(state["plan"])}
    columns = [name for name in state["columns"] if name in typical]
    return pd.DataFrame([typical, missing], columns=columns)

"""The exported configuration file and the pyfunc model's preprocessing, without a search (seconds)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hpsearch.cli.main import main
from hpsearch.data.dataset import preprocessing_state
from hpsearch.data.sources import load_dataset
from hpsearch.model.pyfunc import input_example, transform
from hpsearch.results.export import FORMAT, read_export, write_export
from hpsearch.space import load_space
from tests.conftest import SPACES

DOCUMENT = {
    "format": FORMAT,
    "experiment": "bc",
    "trial": "trial_002",
    "hyperparameters": {"layers": [16, 8], "lr": 0.01, "dropout": 0.1, "weight_decay": 0.0, "batch_size": 32,
                        "optimizer": "adam", "momentum": 0.9, "activation": "relu"},
    "settings": {"data": "sklearn:breast_cancer", "target": None, "task": "binary", "split": [0.7, 0.15, 0.15],
                 "seed": 3, "epochs": 2, "max_epochs": 4, "metric": "val_loss", "mode": "min"},
    "metrics": {"validation": {"val_loss": 0.3}, "test": {"test_loss": 0.31}},
    "provenance": {"search_run_id": "abc", "trial_run_id": "def"},
}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_an_exported_file_round_trips(tmp_path: Path, suffix: str):
    write_export(DOCUMENT, tmp_path / f"best{suffix}")
    assert read_export(tmp_path / f"best{suffix}") == DOCUMENT


def _broken(path: tuple[str, ...], value: object = None, *, delete: bool = False) -> dict:
    document = copy.deepcopy(DOCUMENT)
    section = document
    for key in path[:-1]:
        section = section[key]
    if delete:
        del section[path[-1]]
    else:
        section[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_broken(("hyperparameters", "lr"), delete=True), "field 'hyperparameters.lr' is missing"),
        (_broken(("settings", "seed"), delete=True), "field 'settings.seed' is missing"),
        (_broken(("provenance",), delete=True), "field 'provenance' is missing"),
        (_broken(("hyperparameters", "lr"), -1.0), "field 'hyperparameters.lr': must be a number > 0, but got -1.0"),
        (_broken(("hyperparameters", "optimizer"), "adamm"), "field 'hyperparameters.optimizer': must be one of"),
        (_broken(("hyperparameters", "layers"), [16, "x"]), "field 'hyperparameters.layers'"),
        (_broken(("hyperparameters", "learning_rate"), 0.1), "field 'hyperparameters.learning_rate' is unknown"),
        (_broken(("settings", "epochs"), 0), "field 'settings.epochs' must be an integer >= 1, but is 0"),
        (_broken(("settings", "task"), "ranking"), "field 'settings.task': must be one of 'binary'"),
        (_broken(("settings", "metric"), "val_rmse"), "field 'settings.metric' must be one of train_loss"),
        (_broken(("settings", "data"), "sklearn:mnist"), "field 'settings.data': unknown dataset 'mnist'"),
        (_broken(("settings", "split"), [0.5, 0.5]), "field 'settings.split': must be three fractions"),
        (_broken(("settings", "data"), "callable:load"), "needs 'provenance.space_file'"),
        (_broken(("format",), "other/2"), "field 'format' must be 'hpsearch-best/1'"),
        (["not", "a", "mapping"], "must be a mapping"),
    ],
)
def test_train_rejects_a_file_with_a_missing_or_wrong_field_in_one_line(tmp_path, capsys, document, message):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}: ") and message in err, err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.yaml", None, "no such file"),
        ("best.txt", "a: 1", "must end in .yaml, .yml or .json"),
        ("best.yaml", "hyperparameters: [unclosed", "not valid YAML/JSON"),
        ("best.yaml", "!!python/object/apply:os.system ['echo hi']", "not valid YAML/JSON"),
    ],
)
def test_train_rejects_unreadable_files_in_one_line(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_preprocessing_from_json_matches_the_fitted_column_transformer():
    """The numbers fitted column by column and applied with numpy are scikit-learn's ColumnTransformer's."""
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.read_csv(SPACES / "data" / "churn.csv").drop(columns=["churned"])
    data = load_dataset(load_space(SPACES / "churn.py"), SPACES / "churn.py")
    reference = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
         make_column_selector(dtype_include="number")),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         make_column_selector(dtype_exclude="number")),
    ], sparse_threshold=0.0).fit(data.rows.X.iloc[data.rows.train].astype({"plan": object}))
    rows = frame.iloc[400:].copy()
    rows.loc[rows.index[0], "plan"] = "enterprise"  # a category never seen in training: all zeros
    rows.loc[rows.index[1]] = [np.nan, np.nan, np.nan, None, None]
    state = preprocessing_state(data.preprocessor)
    assert [c["name"] for c in state["numeric"]] == ["age", "tenure_months", "monthly_fee"]
    assert state["categorical"][0]["categories"] == ["basic", "plus", "pro"]
    expected = reference.transform(rows.astype({"plan": object})).astype(np.float32)
    np.testing.assert_allclose(transform(state, rows), expected, atol=1e-6)
    example = input_example(state)
    assert list(example.columns) == list(frame.columns) and example.iloc[1].isna().all()


@pytest.mark.parametrize(("dataset", "task"), [("iris", "multiclass"), ("diabetes", "regression")])
def test_logged_pyfunc_model_predicts_labels_or_numbers_like_the_network(tmp_path, dataset, task):
    import sklearn.datasets
    import torch
    from mlflow import MlflowClient

    from hpsearch.data.sources import load_dataset
    from hpsearch.model.network import save_model
    from hpsearch.results.predict import load_pyfunc
    from hpsearch.results.publish import log_pyfunc
    from hpsearch.space import Search
    from hpsearch.training.fit import TrialConfig, fit, model_spec

    data = load_dataset(Search(data=f"sklearn:{dataset}"), tmp_path / "space.py")
    config = TrialConfig(hidden_sizes=(8,), max_epochs=1)
    network = fit(config, data, lambda metrics, save: None)
    spec = model_spec(config, data)
    save_model(network, spec, tmp_path / "model")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    log_pyfunc(client, run_id, tmp_path / "model", preprocessing_state(data.preprocessor))

    raw = getattr(sklearn.datasets, f"load_{dataset}")(as_frame=True).frame.drop(columns=["target"]).head(20)
    predicted = load_pyfunc(f"runs:/{run_id}/pyfunc_model", uri).predict(raw)
    with torch.no_grad():
        outputs = network.eval()(torch.as_tensor(data.preprocessor.transform(raw).astype(np.float32)))
    if task == "regression":
        expected = outputs.squeeze(1).double().numpy() * data.target_std + data.target_mean
        np.testing.assert_allclose(predicted["prediction"], expected, rtol=1e-5)
    else:
        assert list(predicted["prediction"]) == [data.classes[i] for i in outputs.argmax(1).tolist()]
        assert list(predicted.columns) == ["prediction", *(f"probability_{c}" for c in data.classes)]

"""Your own network (``model=`` in the space file): tracked, exported and served like the built-in one.

A CNN on scikit-learn's digits as 8x8 images and a residual MLP on the diabetes table each run one tiny search
in-process; their published models are then asked from a fresh ``python`` in another folder after the space
file is deleted. Broken model functions are refused before anything is written.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from hpsearch.cli.main import main
from hpsearch.results.export import read_export
from tests.conftest import SPACES, write_space
from tests.isolation import python_without_hpsearch

pytestmark = pytest.mark.e2e

RESIDUAL_MLP = '''
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, width, dropout):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x):
        return x + self.block(x)


def build(config, input_shape, n_outputs):
    width = config["width"]
    return nn.Sequential(nn.Linear(input_shape[0], width),
                         *[Residual(width, config["dropout"]) for _ in range(config["blocks"])],
                         nn.Linear(width, n_outputs))


search = Search(data="sklearn:diabetes", model=build, params={
    "width": choice([8, 16]), "blocks": randint(1, 2), "dropout": 0.1, "lr": loguniform(1e-3, 1e-2)},
    metric="val_mae", num_samples=2, max_epochs=2)
'''

PREDICT = '''
import json, sys
try:
    import hpsearch
    raise AssertionError("hpsearch is importable")
except ModuleNotFoundError:
    pass
import mlflow.pyfunc
import numpy as np
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
if sys.argv[2] == "images":
    from sklearn.datasets import load_digits
    digits = load_digits()
    X = (digits.images[:200, None] / 16.0).astype(np.float32)
    predicted = model.predict(X)
    print(json.dumps({"accuracy": float((predicted["prediction"].to_numpy() == digits.target[:200]).mean()),
                      "columns": list(predicted.columns), "shape": list(X.shape),
                      "inputs": model.metadata.get_input_schema().to_dict()}))
else:
    from sklearn.datasets import load_diabetes
    rows = load_diabetes(as_frame=True).frame.drop(columns=["target"]).head(20)
    predicted = model.predict(rows)
    print(json.dumps({"n": len(predicted), "columns": list(predicted.columns),
                      "finite": bool(np.isfinite(predicted["prediction"]).all())}))
'''


def _uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlruns' / 'mlflow.db'}"


def _children(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`mlflow.parentRunId` != ''")


def _predict_elsewhere(model_uri: str, kind: str, tmp_path: Path, tracking_uri: str) -> dict:
    """The published model, loaded and asked by a fresh Python in an empty folder, without hpsearch."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": tracking_uri, "HOME": str(elsewhere)}
    # no PYTHONPATH either: a Python where hpsearch is not installed (tests/isolation.py)
    done = subprocess.run([*python_without_hpsearch(PREDICT), model_uri, kind], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cnn_search(workdir: Path, capsys, executor: str, epochs: int) -> tuple[Path, MlflowClient, list]:
    """search_spaces/digits_cnn.py, 2 trials, run through the CLI: its file, a client, its trials' runs."""
    space = workdir / "digits_cnn.py"
    space.write_text((SPACES / "digits_cnn.py").read_text())
    code = main(["run", str(space), "--executor", executor, "--num-samples", "2", "--max-epochs", str(epochs),
                 "--no-plots", "-q"])
    assert code == 0, capsys.readouterr().err
    client = MlflowClient(_uri(workdir), registry_uri=_uri(workdir))
    return space, client, _children(client, "digits_cnn")


def test_a_cnn_on_digit_images_is_tracked_exported_and_served_without_its_space_file(workdir, capsys):
    space, client, trials = _cnn_search(workdir, capsys, "local", 2)
    assert len(trials) == 2
    for trial in trials:
        params = trial.data.params
        assert {"channels", "kernel", "dropout", "lr", "batch_size"} <= set(params)
        assert params["channels"] in ("4", "8", "16") and params["kernel"] in ("3", "5")
        assert "n_layers" not in params and "activation" not in params  # the MLP's, not this model's
        assert "val_accuracy" in trial.data.metrics
        files = {Path(a.path).name for a in client.list_artifacts(trial.info.run_id, "model")}
        assert files == {"model.pt", "model.json", "model_code.py"}

    assert main(["export", "digits_cnn", "-o", "best.yaml"]) == 0
    document = read_export(workdir / "best.yaml")
    assert document["settings"]["model"] == "build"
    assert {"channels", "kernel", "dropout", "lr"} <= set(document["hyperparameters"])
    assert "layers" not in document["hyperparameters"]

    space.unlink()
    digits = load_digits()  # one image a row, its 64 pixels in order, and an id to keep beside the predictions
    rows = pd.DataFrame(digits.images[:200].reshape(200, 64) / 16.0).add_prefix("pixel_")
    rows.insert(0, "id", [f"d{i}" for i in range(200)])
    rows.to_csv(workdir / "digits.csv", index=False)
    assert main(["predict", "models:/digits_cnn@best", "digits.csv", "--keep", "id", "-o", "predicted.csv"]) == 0
    predicted = pd.read_csv(workdir / "predicted.csv")
    assert list(predicted["id"]) == list(rows["id"]) and (predicted["prediction"] == digits.target[:200]).mean() > 0.5
    rows.drop(columns="pixel_63").to_csv(workdir / "short.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "models:/digits_cnn@best", "short.csv", "--keep", "id"]) == 2
    assert capsys.readouterr().err.strip() == ("error: short.csv: the model takes examples of shape (1, 8, 8), 64 "
                                               "numbers a row, but the file has 63 columns (--keep names a column "
                                               "that is not one)")

    answer = _predict_elsewhere("models:/digits_cnn@best", "images", workdir, _uri(workdir))
    assert answer["shape"] == [200, 1, 8, 8]
    assert answer["accuracy"] > 0.5 and answer["columns"][0] == "prediction"
    assert answer["inputs"][0]["type"] == "tensor" and answer["inputs"][0]["tensor-spec"]["shape"] == [-1, 1, 8, 8]


def test_a_residual_mlp_on_a_table_takes_raw_columns_when_served(workdir, capsys):
    space = write_space(workdir, RESIDUAL_MLP, name="residual.py")
    code = main(["run", str(space), "--executor", "local", "--no-plots", "-q"])
    assert code == 0, capsys.readouterr().err
    client = MlflowClient(_uri(workdir), registry_uri=_uri(workdir))
    params = [t.data.params for t in _children(client, "residual")]
    assert all({"width", "blocks", "dropout"} <= set(p) for p in params)
    space.unlink()
    answer = _predict_elsewhere("models:/residual@best", "table", workdir, _uri(workdir))
    assert answer == {"n": 20, "columns": ["prediction"], "finite": True}


BROKEN = {
    "raises": ('def build(config, input_shape, n_outputs):\n    raise ValueError("no such layer")\n',
               "space.py:3: model: build(config, input_shape=(10,), n_outputs=1) raised ValueError: no such layer"),
    "not a module": ("def build(config, input_shape, n_outputs):\n    return [nn.Linear(input_shape[0], 1)]\n",
                     "space.py:2: model: build(config, input_shape=(10,), n_outputs=1) returned list; "
                     "it must return a torch.nn.Module"),
    "wrong output shape": ("def build(config, input_shape, n_outputs):\n"
                           "    return nn.Linear(input_shape[0], n_outputs + 2)\n",
                           "space.py:2: model: the model of build() gives (4, 3) for a batch of 4 examples of shape "
                           "(10,); it must give a tensor of shape (4, 1) (batch, n_outputs)"),
    "forward fails": ("def build(config, input_shape, n_outputs):\n"
                      "    return nn.Linear(input_shape[0] + 1, n_outputs)\n",
                      "space.py:2: model: the model of build() failed on a batch of 4 examples of shape (10,): "
                      "RuntimeError: "),  # then torch's own words, which change between releases
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_model_function_is_one_line_naming_its_line_and_nothing_is_written(workdir, capsys, kind):
    body, expected = BROKEN[kind]
    space = workdir / "space.py"
    space.write_text("from torch import nn\n" + body + textwrap.dedent('''
        from hpsearch import Search, loguniform
        search = Search(data="sklearn:diabetes", model=build, params={"lr": loguniform(1e-3, 1e-2)},
                        num_samples=1, max_epochs=1, executor="local")
        '''))
    assert main(["run", "space.py", "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {expected}"), err
    assert sorted(p.name for p in workdir.iterdir()) == ["space.py"]


def test_model_must_be_a_function_of_the_space_file(workdir, capsys):
    write_space(workdir, 'search = Search(data="sklearn:iris", model="resnet18")\n')
    assert main(["run", "space.py"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: space.py:2: model: must be a function defined in the space file")
    assert "'resnet18'" in err
    assert sorted(p.name for p in workdir.iterdir()) == ["space.py"]


def test_the_batched_executor_refuses_a_model_function_and_auto_does_not_choose_it(workdir, capsys):
    body = "def build(config, input_shape, n_outputs):\n    return nn.Linear(input_shape[0], n_outputs)\n"
    space = workdir / "space.py"
    space.write_text("from torch import nn\n" + body + textwrap.dedent('''
        from hpsearch import Search, loguniform
        search = Search(data="sklearn:diabetes", model=build, params={"lr": loguniform(1e-3, 1e-2)},
                        num_samples=1, max_epochs=1)
        '''))
    assert main(["run", "space.py", "--executor", "batched", "--no-plots"]) == 2
    assert "executor: 'batched' trains the built-in network only" in capsys.readouterr().err
    assert main(["run", "space.py", "--executor", "auto", "--no-plots"]) == 0
    out = capsys.readouterr().out  # local, or ray where an earlier test left Ray running in this process
    assert "(not batched: the space file's own model)" in out and "executor auto: batched" not in out


def test_without_model_an_unknown_hyperparameter_is_still_an_error(workdir, capsys):
    write_space(workdir, 'search = Search(data="sklearn:iris", params={"channels": choice([4, 8])})\n')
    assert main(["run", "space.py"]) == 2
    assert "params.channels: unknown hyperparameter" in capsys.readouterr().err


def test_ray_workers_build_the_space_files_model_from_its_code(ray_session, workdir, capsys):
    _, _, trials = _cnn_search(workdir, capsys, "ray", 1)
    assert [t.data.tags["hpsearch.status"] for t in trials] == ["completed", "completed"]
    assert all("channels" in t.data.params and "val_accuracy" in t.data.metrics for t in trials)

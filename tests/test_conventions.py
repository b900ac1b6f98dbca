"""The ecosystem's conventions: ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI`` name the stores when
``--tracking-uri`` is not given, as they do for MLflow's own tools; ``hpsearch --version``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pandas as pd
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from hpsearch.cli.main import main
from tests.conftest import REPO, write_space

SPACE = ("search = Search(data='sklearn:iris', params={'lr': loguniform(1e-3, 1e-1)}, num_samples=2, "
         "max_epochs=1, executor='local', experiment='conv')")


def test_every_command_uses_the_store_mlflow_tracking_uri_names_and_writes_nothing_to_mlruns(
        workdir, monkeypatch, capsys):
    store = workdir / "elsewhere" / "store.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    space = write_space(workdir, SPACE)

    assert main(["run", str(space), "-q"]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("conv")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3  # the search and its two trials
    assert not (workdir / "mlruns").exists()  # neither its database nor its artifacts
    assert experiment.artifact_location.startswith((store.parent / "artifacts").as_uri())
    assert f"python -m hpsearch ui --tracking-uri {uri}" in capsys.readouterr().out

    assert main(["best", "conv", "--json"]) == 0
    assert main(["export", "conv", "-o", "best.yaml"]) == 0
    pd.DataFrame(load_iris(as_frame=True).data).head(5).to_csv("rows.csv", index=False)
    assert main(["predict", "models:/conv@best", "rows.csv", "-o", "predictions.csv"]) == 0
    assert len(pd.read_csv("predictions.csv")) == 5
    assert main(["report", "conv", "-o", "report.html"]) == 0
    assert not (workdir / "mlruns").exists()


def test_the_best_model_is_registered_in_and_loaded_from_the_registry_mlflow_registry_uri_names(
        workdir, monkeypatch):
    registry = f"sqlite:///{workdir / 'registry.db'}"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry)
    space = write_space(workdir, SPACE)

    assert main(["run", str(space), "-q", "--no-plots"]) == 0

    tracking = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    assert MlflowClient(tracking, registry_uri=registry).get_model_version_by_alias("conv", "best").version == 1
    assert MlflowClient(tracking, registry_uri=tracking).search_registered_models() == []
    pd.DataFrame(load_iris(as_frame=True).data).head(3).to_csv("rows.csv", index=False)
    assert main(["predict", "models:/conv@best", "rows.csv", "-o", "predictions.csv"]) == 0


def test_version_prints_hpsearchs_version_and_its_engines():
    shown = subprocess.run([sys.executable, "-m", "hpsearch", "--version"], capture_output=True, text=True,
                           cwd=REPO, check=True).stdout
    assert shown.startswith(f"hpsearch {version('hpsearch')} (")
    assert f"torch {version('torch')}" in shown and f"mlflow {version('mlflow')}" in shown

"""End-to-end: a real churn search, then best / export / train / predict / serve against its MLflow store.

One small search (3 trials, 2 epochs) is shared by the whole module; ``ray_results/`` is deleted right after
it, so every command below can only have read MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.data.sources import load_dataset
from hpsearch.model.network import load_model
from hpsearch.results import publish
from hpsearch.results.export import read_export
from hpsearch.results.predict import load_pyfunc
from hpsearch.space import load_space
from tests.conftest import SPACES, write_space
from tests.serving import ask, free_port, served_model, wait_until_up

pytestmark = pytest.mark.e2e

CHURN = SPACES / "churn.py"
CHURN_CSV = SPACES / "data" / "churn.csv"


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory):
    """A folder holding the MLflow store of one finished churn search (and nothing of Ray's)."""
    directory = tmp_path_factory.mktemp("churn")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        code = main(["run", str(CHURN), "--num-samples", "3", "--max-epochs", "2", "--experiment", "churn"])
        assert code == 0
        shutil.rmtree(directory / "ray_results")
        yield directory


def _client(directory: Path) -> MlflowClient:
    return MlflowClient(_uri(directory), registry_uri=_uri(directory))


def _uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlruns' / 'mlflow.db'}"


def _search_run(client: MlflowClient, experiment: str = "churn"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`hpsearch.kind` = 'search'")[0]


def _raw_rows() -> pd.DataFrame:
    """Raw churn rows with missing values in every column and a region never seen in training."""
    frame = pd.read_csv(CHURN_CSV).drop(columns=["churned"]).head(40).copy()
    assert frame["plan"].dtype != np.float64  # text columns stay text
    frame.loc[0, ["age", "plan"]] = [np.nan, None]
    frame.loc[1, ["monthly_fee", "region"]] = [np.nan, None]
    frame.loc[2, "region"] = "atlantis"
    frame.loc[3] = [np.nan, np.nan, np.nan, None, None]
    return frame


def test_best_ranks_trials_from_mlflow_alone(store, monkeypatch, capsys):
    monkeypatch.chdir(store)
    assert main(["best", "churn", "--json", "--top", "3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    search = _search_run(_client(store))
    values = [t["val_loss"] for t in shown["trials"]]
    assert shown["search_run_id"] == search.info.run_id and values == sorted(values)
    assert shown["trials"][0]["run_id"] == search.data.tags["hpsearch.best_run_id"]
    assert {"layers", "lr", "dropout", "optimizer"} <= set(shown["trials"][0]["hyperparameters"])

    assert main(["best", "--top", "2"]) == 0  # no experiment: the latest search in the store
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:5] == ["rank", "trial", "status", "val_loss", "epochs"]
    assert table[4] == "on the test split (rows no trial saw):"  # two trials, then what the search bought


def test_export_writes_the_best_configuration_with_provenance_and_round_trips(store, monkeypatch):
    monkeypatch.chdir(store)
    assert main(["export", "churn", "-o", "best.yaml"]) == 0
    assert main(["export", "churn", "-o", "best.json"]) == 0
    document = read_export(store / "best.yaml")
    assert document == yaml.safe_load((store / "best.yaml").read_text())
    assert _undated(read_export(store / "best.json")) == _undated(document)  # the same, but for the time

    client = _client(store)
    search = _search_run(client)
    trial = client.get_run(search.data.tags["hpsearch.best_run_id"])
    params, provenance = trial.data.params, document["provenance"]
    hyper = document["hyperparameters"]
    assert hyper["layers"] == [int(params[f"units_{i}"]) for i in range(int(params["n_layers"]))]
    assert hyper["lr"] == float(params["lr"]) and hyper["optimizer"] == params["optimizer"]
    settings = document["settings"]
    assert settings["data"] == "csv:data/churn.csv" and settings["target"] == "churned" and settings["seed"] == 1
    assert settings["task"] == "binary" and settings["epochs"] == int(trial.data.metrics["epochs_trained"])
    assert document["metrics"]["validation"]["val_loss"] == trial.data.metrics["val_loss"]
    assert document["metrics"]["test"]["test_accuracy"] == trial.data.metrics["test_accuracy"]
    assert provenance["search_run_id"] == search.info.run_id and provenance["trial_run_id"] == trial.info.run_id
    assert provenance["space_sha256"] == publish.file_sha256(CHURN)
    assert set(provenance["versions"]) == {"hpsearch", "torch", "ray", "mlflow"}


def test_retrain_from_the_exported_file_reproduces_the_trial_metric(store, monkeypatch, capsys):
    monkeypatch.chdir(store)
    assert main(["export", "churn", "-o", "retrain.yaml"]) == 0
    document = read_export(store / "retrain.yaml")
    assert main(["train", "retrain.yaml"]) == 0
    assert "retrained for" in capsys.readouterr().out

    client = _client(store)
    exp = client.get_experiment_by_name("churn")
    [run] = client.search_runs([exp.experiment_id],
                               "tags.`hpsearch.kind` = 'retrain' and tags.`hpsearch.full_data` = 'false'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["hpsearch.search_run_id"] == document["provenance"]["search_run_id"]
    assert run.data.tags["hpsearch.trial_run_id"] == document["provenance"]["trial_run_id"]
    expected = document["metrics"]
    assert run.data.metrics["val_loss"] == pytest.approx(expected["validation"]["val_loss"], rel=1e-4)
    assert run.data.metrics["test_accuracy"] == pytest.approx(expected["test"]["test_accuracy"], abs=1e-6)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == list(range(1, document["settings"]["epochs"] + 1))
    model = load_pyfunc(f"runs:/{run.info.run_id}/pyfunc_model", _uri(store))
    assert list(model.predict(_raw_rows()).columns) == ["prediction", "probability_no", "probability_yes"]


def test_retrain_on_full_data_trains_on_train_and_validation(store, monkeypatch):
    monkeypatch.chdir(store)
    assert main(["export", "churn", "-o", "full.yaml"]) == 0
    assert main(["train", "full.yaml", "--full-data", "--epochs", "1"]) == 0
    client = _client(store)
    exp = client.get_experiment_by_name("churn")
    [run] = client.search_runs([exp.experiment_id], "tags.`hpsearch.full_data` = 'true'")
    assert run.data.params["full_data"] == "True" and run.data.metrics["epochs_trained"] == 1
    assert "test_accuracy" in run.data.metrics


def test_the_best_trials_logged_model_predicts_raw_rows_like_the_in_process_model(store, tmp_path):
    client = _client(store)
    best_run = _search_run(client).data.tags["hpsearch.best_run_id"]
    model = load_pyfunc(f"runs:/{best_run}/pyfunc_model", _uri(store))
    rows = _raw_rows()
    predicted = model.predict(rows)

    network, spec = load_model(client.download_artifacts(best_run, "model", str(tmp_path)))
    data = load_dataset(load_space(CHURN), CHURN)  # the search's own preprocessing, fitted again the same way
    with torch.no_grad():
        logits = network(torch.as_tensor(data.preprocessor.transform(rows).astype(np.float32))).squeeze(1)
    expected = torch.sigmoid(logits).double().numpy()
    np.testing.assert_allclose(predicted["probability_yes"].to_numpy(), expected, atol=1e-6)
    assert list(predicted["prediction"]) == [spec.classes[int(p > 0.5)] for p in expected]
    columns = list(model.metadata.metadata["hpsearch_input_columns"])
    assert columns == ["age", "tenure_months", "monthly_fee", "plan", "region"]
    registered = load_pyfunc("models:/churn@best", _uri(store))  # the search's model (its ensemble, refit)
    assert list(registered.metadata.metadata["hpsearch_input_columns"]) == columns
    assert list(registered.predict(rows).columns) == list(predicted.columns)


def test_predict_writes_one_prediction_per_raw_csv_row(store, tmp_path, capsys):
    rows = _raw_rows()
    rows["churned"] = "yes"  # the target column may stay in the file: it is ignored
    rows.to_csv(tmp_path / "input.csv", index=False)
    code = main(["predict", "models:/churn@best", str(tmp_path / "input.csv"), "-o", str(tmp_path / "out.csv"),
                 "--tracking-uri", _uri(store)])
    assert code == 0
    assert "ignoring the columns the model does not take: churned" in capsys.readouterr().err
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == len(rows) and set(out["prediction"]) <= {"yes", "no"}
    np.testing.assert_allclose(out["probability_yes"] + out["probability_no"], 1.0, atol=1e-9)


def test_predict_rejects_a_csv_missing_a_column_of_the_signature(store, tmp_path, capsys):
    _raw_rows().drop(columns=["region"]).to_csv(tmp_path / "input.csv", index=False)
    code = main(["predict", "models:/churn@best", str(tmp_path / "input.csv"), "-o", str(tmp_path / "out.csv"),
                 "--tracking-uri", _uri(store)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "region is missing" in err and not (tmp_path / "out.csv").exists()


def test_predict_rejects_a_csv_with_text_in_a_numeric_column(store, tmp_path, capsys):
    rows = _raw_rows().astype({"age": object})
    rows.loc[5, "age"] = "forty"
    rows.to_csv(tmp_path / "input.csv", index=False)
    code = main(["predict", "models:/churn@best", str(tmp_path / "input.csv"), "-o", str(tmp_path / "out.csv"),
                 "--tracking-uri", _uri(store)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("input.csv: column 'age', row 5: 'forty' is not a number (line 7 of the file)")


def test_mlflow_models_serve_answers_requests_in_the_forms_clients_send(store):
    """One server, every request form: records and split, whole numbers as JSON integers (int64), a column
    null in every row, columns in another order, an extra column, a CSV body; text in a numeric column and
    infinite numbers are HTTP 400.

    The programs are found next to the Python running the tests, so the suite needs no activated venv.
    """
    with served_model("models:/churn@best", _uri(store), store) as url:
        split = {"columns": ["age", "tenure_months", "monthly_fee", "plan", "region"],
                 "data": [[41, 31, 23.96, "plus", "east"], [None, 6, None, None, "west"]]}
        by_split = ask(url, {"dataframe_split": split})
        records = [{"region": "east", "plan": "plus", "monthly_fee": 23.96, "tenure_months": 31, "age": 41,
                    "customer": "c-1"},
                   {"region": "west", "plan": None, "monthly_fee": None, "tenure_months": 6, "age": None,
                    "customer": "c-2"}]
        by_records = ask(url, {"dataframe_records": records})
        for predictions in (by_split, by_records):
            assert len(predictions) == 2 and {p["prediction"] for p in predictions} <= {"yes", "no"}
            assert all(abs(p["probability_yes"] + p["probability_no"] - 1) < 1e-9 for p in predictions)
        assert by_records == by_split
        no_plan = ask(url, {"dataframe_records": [{**r, "plan": None} for r in records]})
        assert no_plan[1] == by_split[1]  # that row had no plan already

        csv = "age,tenure_months,monthly_fee,plan,region\n41,31,23.96,plus,east\n,6,,,west\n"
        request = urllib.request.Request(url, csv.encode(), {"Content-Type": "text/csv"})
        with urllib.request.urlopen(request, timeout=30) as response:  # as `curl --data-binary @rows.csv`
            assert json.loads(response.read())["predictions"] == by_split

        bad = {"dataframe_split": {**split, "data": [[41, "thirty", 23.96, "plus", "east"]]}}
        infinite = ('{"dataframe_split": {"columns": ["age", "tenure_months", "monthly_fee", "plan", "region"], '
                    '"data": [[1e400, -1e400, 23.96, "plus", "east"]]}}')  # JSON numbers beyond float64
        for body, said in ((bad, "column 'tenure_months', row 0: 'thirty' is not a number"),
                           (infinite, "column 'age', row 0: inf is not a finite number")):
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, data, {"Content-Type": "application/json"}),
                                       timeout=30)
            assert refused.value.code == 400
            assert said in refused.value.read().decode()


def test_a_later_search_moves_the_alias_only_when_it_does_better(store):
    client = _client(store)
    current = client.get_model_version_by_alias("churn", "best")
    value = float(current.tags["hpsearch.value"])
    args = {"metric": "val_loss", "mode": "min"}
    worse, moved = publish.register(client, "churn", current.source, current.run_id, value=value + 1, **args)
    assert not moved and str(client.get_model_version_by_alias("churn", "best").version) == str(current.version)
    assert client.get_model_version("churn", worse).tags["hpsearch.best"] == "false"
    better, moved = publish.register(client, "churn", current.source, current.run_id, value=value - 1, **args)
    assert moved and str(client.get_model_version_by_alias("churn", "best").version) == better
    client.set_registered_model_alias("churn", "best", current.version)  # leave the store as the search left it


def test_unknown_experiment_is_a_one_line_error_with_the_nearest_name(store, monkeypatch, capsys):
    monkeypatch.chdir(store)
    assert main(["export", "no-such-experiment", "-o", "x.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: no experiment 'no-such-experiment' in the tracking store (it has: 'churn')"
    for command in (["best", "Chrun"], ["report", "chrun", "-o", "r.html"], ["resume", "chrun"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.endswith("did you mean 'churn'? (it has: 'churn')"), err


def test_a_search_without_a_completed_trial_is_a_one_line_error(ray_session, workdir, capsys):
    space = write_space(workdir, """
search = Search(data="sklearn:diabetes", task="regression", params={"lr": 1e12, "optimizer": "sgd"},
                num_samples=1, max_epochs=1, scheduler="fifo")
""")
    assert main(["run", str(space), "--experiment", "diverges"]) == 1
    capsys.readouterr()
    for command in (["best", "diverges"], ["export", "diverges", "-o", "best.yaml"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "has no completed trial" in err
    assert not (workdir / "best.yaml").exists()


# ------------------------------------------------------------------------------------------------- helpers
def _undated(document: dict) -> dict:
    return {**document, "provenance": {**document["provenance"], "exported_at": None}}


def test_retrain_reloads_a_data_function_from_the_space_file_and_checks_its_hash(ray_session, workdir, capsys):
    space = write_space(workdir, """
from sklearn.datasets import load_wine

def wine():
    return load_wine(return_X_y=True, as_frame=True)

search = Search(data=wine, params={"layers": [16], "lr": loguniform(1e-3, 1e-1)}, num_samples=1, max_epochs=2,
                scheduler="fifo", seed=5)
""")
    assert main(["run", str(space), "--experiment", "wine"]) == 0
    assert main(["export", "wine", "-o", "wine.yaml"]) == 0
    document = read_export(workdir / "wine.yaml")
    assert document["settings"]["data"] == "callable:wine"
    assert document["provenance"]["space_file"] == str(space.resolve())
    capsys.readouterr()
    assert main(["train", "wine.yaml"]) == 0
    line = capsys.readouterr().out
    assert f"val_loss={document['metrics']['validation']['val_loss']:.4g}" in line

    space.write_text(space.read_text().replace("seed=5", "seed=6"))
    assert main(["train", "wine.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has changed since the search" in err


def test_best_export_train_and_predict_work_against_a_tracking_server(ray_session, workdir, capsys):
    """A search tracked on an MLflow server (artifacts proxied by it), then every command through HTTP only."""
    port = free_port()
    server_dir = workdir / "server"
    server_dir.mkdir()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{server_dir / 's.db'}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = server_dir / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=server_dir, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server, log)
        remote = ["--tracking-uri", f"http://127.0.0.1:{port}"]
        assert main(["run", str(CHURN), "--num-samples", "1", "--max-epochs", "1", "--experiment", "remote",
                     *remote]) == 0
        shutil.rmtree(workdir / "ray_results")
        assert not (workdir / "mlruns").exists()  # nothing was tracked locally
        capsys.readouterr()
        assert main(["best", "remote", "--json", *remote]) == 0
        best = json.loads(capsys.readouterr().out)["trials"][0]
        assert main(["export", "remote", "-o", "remote.yaml", *remote]) == 0
        document = read_export(workdir / "remote.yaml")
        assert document["provenance"]["tracking_uri"] == remote[1]
        assert document["provenance"]["trial_run_id"] == best["run_id"]
        assert main(["train", "remote.yaml"]) == 0  # logs to the server the file names
        assert main(["predict", "models:/remote@best", str(CHURN_CSV), "-o", "p.csv", *remote]) == 0
        assert len(pd.read_csv(workdir / "p.csv")) == len(pd.read_csv(CHURN_CSV))
        client = MlflowClient(remote[1])
        retrains = client.search_runs([document["provenance"]["experiment_id"]], "tags.`hpsearch.kind` = 'retrain'")
        assert len(retrains) == 1 and retrains[0].data.metrics["val_loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)

"""Space files: the good ones load, each kind of mistake is one clear error naming the file and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpsearch import SpaceError, load_space
from hpsearch.space import Layers, suggest_params
from tests.conftest import REPO, SPACES, write_space


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_space_file_loads(path: Path):
    search = load_space(path)
    assert search.num_samples >= 1 and search.params


BAD_SPACES = [
    # (body, the field or place named, words of the message)
    ("search = Search(data='sklearn:digits', colour='red')", "colour", "unknown field"),
    ("search = Search(params={})", "data", "is required"),
    ("search = Search(data='sklearn:mnist')", "data", "unknown dataset 'mnist'"),
    ("search = Search(data='s3:bucket')", "data", "unknown data source"),
    ("search = Search(data='sklearn:iris', params={'lr': loguniform(0, 1)})", "params.lr", "0 < low < high"),
    ("search = Search(data='sklearn:iris', params={'dropout': uniform(1, 0)})", "params.dropout", "low < high"),
    ("search = Search(data='sklearn:iris', params={'dropout': uniform(0, 1.5)})", "params.dropout", "[0, 1)"),
    ("search = Search(data='sklearn:iris', params={'optimizer': choice(['adam', 'lion'])})", "params.optimizer",
     "one of sgd, adam, adamw, rmsprop"),
    ("search = Search(data='sklearn:iris', params={'activation': 'swish'})", "params.activation", "relu"),
    ("search = Search(data='sklearn:iris', params={'batch_size': uniform(8, 64)})", "params.batch_size",
     "use randint, choice"),
    ("search = Search(data='sklearn:iris', params={'lr': choice([])})", "params.lr", "at least one option"),
    ("search = Search(data='sklearn:iris', params={'lr': [0.1, 0.01]})", "params.lr", "choice([0.1, 0.01])"),
    ("search = Search(data='sklearn:iris', params={'layers': layers(3, 1, units=(8, 16))})", "params.layers",
     "min_layers <= max_layers"),
    ("search = Search(data='sklearn:iris', params={'layers': layers(1, 2, units=(0, 16))})", "params.layers",
     "1 <= low <= high"),
    ("search = Search(data='sklearn:iris', params={'layers': [64, -1]})", "params.layers", "integers >= 1"),
    ("search = Search(data='sklearn:iris', params={'width': 3})", "params.width", "unknown hyperparameter"),
    ("search = Search(data='sklearn:iris', params={'lr_schedule': 'linear'})", "params.lr_schedule",
     "must be one of constant, cosine, onecycle, but got 'linear'"),
    ("search = Search(data='sklearn:iris', params={'label_smoothing': 1.0})", "params.label_smoothing",
     "must be a number in [0, 1), but got 1.0"),
    ("search = Search(data='sklearn:iris', params={'adam_beta2': uniform(0.9, 1.5)})", "params.adam_beta2",
     "must be a number in [0, 1), but got 1.5"),
    ("search = Search(data='sklearn:iris', params={'numeric_encoding': choice(['standard', 'minmax'])})",
     "params.numeric_encoding", "must be one of standard, robust, quantile, piecewise_linear, but got 'minmax'"),
    ("search = Search(data='sklearn:iris', params={'numeric_embedding': 'linear'})", "params.numeric_embedding",
     "must be one of none, periodic"),
    ("search = Search(data='sklearn:iris', params={'target_transform': 'log'})", "params.target_transform",
     "must be one of none, log1p, but got 'log'"),
    ("search = Search(data='sklearn:iris', params={'lr_schedule': uniform(0, 1)})", "params.lr_schedule",
     "use choice"),
    ("search = Search(data='sklearn:iris', task='ranking')", "task", "'binary', 'multiclass', 'regression'"),
    ("search = Search(data='sklearn:iris', mode='up')", "mode", "'min' or 'max'"),
    ("search = Search(data='sklearn:iris', num_samples=0)", "num_samples", "integer >= 1"),
    ("search = Search(data='sklearn:iris', max_epochs='10')", "max_epochs", "integer >= 1"),
    ("search = Search(data='sklearn:iris', scheduler='hyperband')", "scheduler", "'asha', 'fifo'"),
    ("search = Search(data='sklearn:iris', scheduler=asha(grace_period=0))", "scheduler", "grace_period >= 1"),
    ("search = Search(data='sklearn:iris', searcher='bayes')", "searcher", "'tpe', 'random', 'grid'"),
    ("search = Search(data='sklearn:iris', resources={'cpu': 1, 'tpu': 1})", "resources", "keys 'cpu' and 'gpu'"),
    ("search = Search(data='sklearn:iris', resources={'cpu': 0})", "resources.cpu", "> 0"),
    ("search = Search(data='sklearn:iris', split=(0.8, 0.1, 0.2))", "split", "summing to 1"),
    ("search = Search(data='sklearn:iris', early_stopping_patience=0)", "early_stopping_patience", ">= 1"),
    ("search = Search(data='sklearn:iris', executor='spark')", "executor", "'ray', 'local', 'batched', 'auto'"),
    ("search = Search(data='sklearn:iris', ensemble='yes')", "ensemble", "number of greedy selection steps"),
    ("search = Search(data='sklearn:iris', ensemble=-1)", "ensemble", "or False to publish the best trial alone"),
    ("search = Search(data='sklearn:iris', ensemble=2.5)", "ensemble", "an integer >= 1"),
    ("search = Search(data='sklearn:iris', baseline='tree')", "baseline", "must be True or False"),
    ("search = Search(data='sklearn:iris', cv=1.5)", "cv", "a number of folds from 2 to 20"),
    ("search = Search(data='sklearn:iris', cv=50)", "cv", "or False for one validation split, but got 50"),
    ("search = Search(data='sklearn:iris', refit='yes')", "refit", "must be True or False"),
    ("search = {'data': 'sklearn:iris'}", "space.py", "must be built with hpsearch.Search"),
    ("other = 1", "space.py", "defines no module-level `search`"),
    ("search = Search(data='sklearn:iris'\n", "space.py:", "syntax error"),
    ("import not_a_module\nsearch = None", "space.py:2", "ModuleNotFoundError"),
]


@pytest.mark.parametrize(("body", "where", "words"), BAD_SPACES, ids=[b[1] + ":" + b[2] for b in BAD_SPACES])
def test_a_bad_space_file_is_one_error_naming_file_and_field(tmp_path: Path, body: str, where: str, words: str):
    path = write_space(tmp_path, body)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(str(path)) and where in message and words in message
    assert "\n" not in message


def test_a_missing_or_non_python_space_file_is_named(tmp_path: Path):
    with pytest.raises(SpaceError, match="nope.py: no such file"):
        load_space(tmp_path / "nope.py")
    (tmp_path / "space.yaml").write_text("data: x")
    with pytest.raises(SpaceError, match="must be a Python file"):
        load_space(tmp_path / "space.yaml")


def test_the_error_of_a_space_file_names_its_line(tmp_path: Path):
    path = write_space(tmp_path, "\n\nsearch = Search(data='sklearn:iris', params={'lr': loguniform(0, 1)})\n")
    with pytest.raises(SpaceError, match=r"space.py:4: params.lr"):
        load_space(path)


def test_cli_exits_2_with_one_line_and_writes_nothing_for_a_bad_space(tmp_path: Path):
    path = write_space(tmp_path, "search = Search(data='sklearn:iris', params={'lr': loguniform(0, 1)})")
    result = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "params.lr" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "ray_results").exists()


def _ask(search, seed: int = 0) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    constants = suggest_params(search.params, trial)
    return {**trial.params, **constants}


def test_conditional_layers_suggest_one_width_per_existing_layer(tmp_path: Path):
    search = load_space(write_space(tmp_path, "search = Search(data='sklearn:iris', "
                                    "params={'layers': layers(1, 3, units=(16, 256)), 'lr': 0.01})"))
    seen_depths = set()
    for seed in range(20):
        config = _ask(search, seed)
        n = config["n_layers"]
        seen_depths.add(n)
        assert {k for k in config if k.startswith("units_")} == {f"units_{i}" for i in range(n)}
        assert all(16 <= config[f"units_{i}"] <= 256 for i in range(n))
        assert config["lr"] == 0.01
    assert seen_depths == {1, 2, 3}


@pytest.mark.parametrize("spec", ["layers(sizes=[128, 64])", "[128, 64]"])
def test_fixed_layer_sizes_are_recorded_as_n_layers_and_units(tmp_path: Path, spec: str):
    search = load_space(write_space(tmp_path, f"search = Search(data='sklearn:iris', params={{'layers': {spec}}})"))
    assert _ask(search) == {"n_layers": 2, "units_0": 128, "units_1": 64}


def test_a_choice_of_layer_lists_picks_a_whole_list(tmp_path: Path):
    search = load_space(write_space(tmp_path, "search = Search(data='sklearn:iris', "
                                    "params={'layers': choice([[32], [64, 32]])})"))
    assert isinstance(search.params["layers"], Layers)
    picks = {_ask(search, seed)["n_layers"] for seed in range(10)}
    assert picks == {1, 2}


def test_grid_enumerates_choices_and_refuses_continuous_params(tmp_path: Path):
    search = load_space(write_space(tmp_path, "search = Search(data='sklearn:iris', searcher='grid', params={"
                                    "'layers': choice([[32], [64, 32]]), 'optimizer': choice(['adam', 'sgd']),"
                                    " 'lr': 0.01})"))
    assert search.grid_size() == 4
    continuous = load_space(write_space(tmp_path, "search = Search(data='sklearn:iris', searcher='grid', "
                                        "params={'lr': loguniform(1e-3, 1e-1)})", name="grid2.py"))
    with pytest.raises(SpaceError, match="params.lr: searcher 'grid' needs choices and fixed values only"):
        continuous.grid()


def test_the_training_choices_are_accepted_as_values_and_choices_and_reach_the_trial(tmp_path: Path):
    from hpsearch.training.fit import TrialConfig

    search = load_space(write_space(tmp_path, "search = Search(data='sklearn:diabetes', params={"
                                    "'lr_schedule': choice(['cosine', 'onecycle']), 'adam_beta2': uniform(0.9, 0.999),"
                                    " 'numeric_encoding': choice(['robust', 'quantile', 'piecewise_linear']),"
                                    " 'numeric_embedding': 'periodic',"
                                    " 'target_transform': choice(['none', 'log1p'])})"))
    config = TrialConfig.from_params(_ask(search))
    assert config.lr_schedule in ("cosine", "onecycle") and 0.9 <= config.adam_beta2 <= 0.999
    assert config.numeric_encoding in ("robust", "quantile", "piecewise_linear")
    assert config.numeric_embedding == "periodic" and config.target_transform in ("none", "log1p")
    classes = load_space(write_space(tmp_path, "search = Search(data='sklearn:iris', "
                                     "params={'label_smoothing': uniform(0.0, 0.2)})", name="iris.py"))
    assert 0 <= TrialConfig.from_params(_ask(classes)).label_smoothing <= 0.2


def test_replace_checks_overrides_again():
    search = load_space(SPACES / "digits.py")
    assert search.replace(num_samples=3).num_samples == 3
    with pytest.raises(SpaceError, match="num_samples"):
        search.replace(num_samples=-1)

"""Every mistake a user can make before a search starts: exit code 2, one line naming the file and what is
wrong, and nothing written to the store or the results folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.cli.main import main

IRIS = "data='sklearn:iris'"
CSV = "data='csv:table.csv'"
TABLE = "size,colour,label,score\n" + "".join(f"{i},{'red' if i % 2 else 'blue'},{'cat' if i % 3 else 'dog'},{i}.5\n"
                                              for i in range(40))

# (space file body or None for no file, extra command-line arguments, words of the error)
BAD_INPUTS = [
    ("missing space file", None, [], "no such file"),
    ("not python", b"\x00\x01binary", [], "null bytes"),
    ("syntax error", "search = Search(data='sklearn:iris'\n", [], "space.py:2: syntax error"),
    ("no search", "x = 1", [], "defines no module-level `search`"),
    ("unknown field", f"search = Search({IRIS}, epochs=3)", [], "epochs: unknown field"),
    ("typo in a hyperparameter", f"search = Search({IRIS}, params={{'learning_rate': 0.1}})", [],
     "params.learning_rate: unknown hyperparameter; did you mean lr?"),
    ("several unknown names", f"search = Search({IRIS}, epochs=3, params={{'dropuot': 0.1}})", [],
     "2 unknown names: epochs (did you mean max_epochs?), params.dropuot (did you mean dropout?)"),
    ("wrong type", f"search = Search({IRIS}, num_samples='ten')", [], "num_samples: must be an integer"),
    ("bad bounds", f"search = Search({IRIS}, params={{'lr': loguniform(1, 0.1)}})", [], "params.lr: loguniform"),
    ("empty choice", f"search = Search({IRIS}, params={{'batch_size': choice([])}})", [], "at least one option"),
    ("unknown optimizer", f"search = Search({IRIS}, params={{'optimizer': 'lbfgs'}})", [], "params.optimizer"),
    ("unknown activation", f"search = Search({IRIS}, params={{'activation': 'relu6'}})", [], "params.activation"),
    ("unknown task", f"search = Search({IRIS}, task='ranking')", [], "task: must be one of"),
    ("unknown metric", f"search = Search({IRIS}, metric='f1')", [], "metric: 'f1' is not reported"),
    ("metric not for the task", f"search = Search({IRIS}, metric='val_rmse')", [], "not reported for a multiclass"),
    ("unknown dataset", "search = Search(data='sklearn:mnist')", [], "unknown dataset 'mnist'"),
    ("csv missing", "search = Search(data='csv:nope.csv', target='label')", [], "file not found"),
    ("target column missing", f"search = Search({CSV}, target='species')", [], "target column 'species' not found"),
    ("empty csv", "search = Search(data='csv:empty.csv', target='label')", [], "the file is empty"),
    ("one class", "search = Search(data='csv:one.csv', target='label')", [], "has a single class"),
    ("non-numeric regression target", f"search = Search({CSV}, target='colour', task='regression')", [],
     "needs a numeric target"),
    ("too many cpus", f"search = Search({IRIS})", ["--cpus-per-trial", "64"], "resources.cpu: asks for 64 CPUs"),
    ("too many gpus", f"search = Search({IRIS}, resources={{'cpu': 1, 'gpu': 0.5}})", [], "resources.gpu"),
    ("bad override", f"search = Search({IRIS})", ["--num-samples", "0"], "num_samples: must be an integer >= 1"),
    ("unreachable tracking uri", f"search = Search({IRIS})", ["--tracking-uri", "http://127.0.0.1:9"],
     "cannot be reached"),
    ("drop not a list", f"search = Search({CSV}, target='label', drop='size')", [], "drop: must be a list of column"),
    ("drop unknown column", f"search = Search({CSV}, target='label', drop=['sise'])", [],
     "space.py: drop: no column 'sise' in csv:table.csv; the columns are: size, colour, label, score"),
    ("drop the target", f"search = Search({CSV}, target='label', drop=['label'])", [], "drop: 'label' is the target"),
    ("regression on text labels", f"search = Search({CSV}, target='label', task='regression')", [],
     "task 'regression' needs a numeric target, but 'label' holds"),
    ("bad experiment name", f"search = Search({IRIS}, experiment='a\\nb')", [], "experiment: must be 1 to 200"),
    ("a data function that raises", "def load():\n    raise ValueError('cannot read')\nsearch = Search(data=load)", [],
     "space.py:3: data: load() raised ValueError: cannot read"),
    ("infinity in X", "import numpy as np\ndef load():\n    X = np.random.default_rng(0).normal(size=(40, 2))\n"
     "    X[5, 1] = np.inf\n    return X, np.arange(40) % 2\nsearch = Search(data=load)", [],
     "data=load: infinite values in column 'x1' (1 row); replace them with numbers, or with NaN"),
    ("infinity in a csv", "search = Search(data='csv:inf.csv', target='label')", [],
     "csv:inf.csv: infinite values in column 'size' (2 rows)"),
    ("target column misspelt", f"search = Search({CSV}, target='lable')", [],
     "target column 'lable' not found; the columns are: size, colour, label, score; did you mean 'label'?"),
    ("target transform of classes", f"search = Search({IRIS}, params={{'target_transform': 'log1p'}})", [],
     "params.target_transform: is for a regression target, but this search's task is multiclass"),
    ("log1p of a target below -1", "import numpy as np\ndef rows():\n    return np.arange(60.0).reshape(30, 2), "
     "np.arange(30.0) - 10\nsearch = Search(data=rows, params={'target_transform': choice(['none', 'log1p'])})", [],
     "params.target_transform: 'log1p' needs target values above -1, but 'target' has values down to -10"),
    ("label smoothing of a regression", "search = Search(data='sklearn:diabetes', params={'label_smoothing': 0.1})",
     [], "params.label_smoothing: is for classification, but this search's task is regression"),
    ("ensemble not a size", f"search = Search({IRIS}, ensemble='best')", [],
     "space.py:2: ensemble: must be the number"),
    ("baseline not a boolean", f"search = Search({IRIS}, baseline=1)", [],
     "space.py:2: baseline: must be True or False"),
]


@pytest.mark.parametrize(("body", "args", "words"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(ray_session, workdir: Path, capsys, body, args, words):
    (workdir / "table.csv").write_text(TABLE)
    (workdir / "empty.csv").write_text("")
    (workdir / "one.csv").write_text("size,label\n" + "".join(f"{i},cat\n" for i in range(20)))
    (workdir / "inf.csv").write_text("size,label\n" + "".join(f"{'inf' if i in (3, 7) else i},{i % 2}\n"
                                                              for i in range(20)))
    space = workdir / "space.py"
    if isinstance(body, bytes):
        space.write_bytes(body)
    elif body is not None:
        space.write_text("from hpsearch import Search, choice, layers, loguniform, uniform\n" + body)

    assert main(["run", str(space), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {space}") and words in err and "\n" not in err, err
    assert not (workdir / "mlruns").exists() and not (workdir / "ray_results").exists()

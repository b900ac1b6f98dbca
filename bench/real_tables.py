"""How good the search is on real tables: hpsearch's best trial against scikit-learn's HistGradientBoosting.

    PYTHONPATH=. python bench/real_tables.py                 # every table of tests/test_real_tables.py
    PYTHONPATH=. python bench/real_tables.py --tables mpg,fair --trials 8 --epochs 20

For each table of the test corpus (larger tables sampled to ``--rows`` rows, seeded) a search runs as a user
runs it (``python -m hpsearch run``, in-process executor, the README's example space, ``--trials`` x
``--epochs``), and its best trial's test metric (accuracy, or RMSE for regression) is put beside a
HistGradientBoosting model fitted on the same training split with the same preprocessing and scored on the same
test split. ``--grace-one`` also runs each search with ASHA's former default grace period of one epoch
(``asha(grace_period=1)``), beside the default chosen from the budget (a tenth of ``max_epochs``), to show what
that default changes. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpsearch.data.sources import load_dataset  # noqa: E402
from hpsearch.space import load_space  # noqa: E402
from tests.test_real_tables import TABLES  # noqa: E402

# The README's example space: what a user writing a space file from it searches.
SPACE = ('{"layers": layers(1, 3, units=(16, 256)), "lr": loguniform(1e-4, 1e-1), "dropout": uniform(0.0, 0.5), '
         '"weight_decay": loguniform(1e-6, 1e-2), "batch_size": choice([32, 64, 128]), '
         '"optimizer": choice(["adam", "adamw", "sgd", "rmsprop"])}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", help="comma-separated names (default: all)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--grace-one", action="store_true", help="also search with asha(grace_period=1)")
    args = parser.parse_args()
    wanted = set(args.tables.split(",")) if args.tables else None
    extra = " hpsearch test, grace 1 | search wall s, grace 1 |" if args.grace_one else ""
    print(f"| table | rows | task | hpsearch test | HistGradientBoosting test | metric | search wall s |{extra}")
    print("|---|---|---|---|---|---|---|" + "---|---|" * args.grace_one)
    for name, make, target, task, _ in TABLES:
        if wanted and name not in wanted:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
            print(_row(Path(folder), name, make(), target, task, args), flush=True)


def _row(folder: Path, name: str, frame, target: str, task: str, args: argparse.Namespace) -> str:
    if len(frame) > args.rows:
        frame = frame.sample(args.rows, random_state=0).sort_index()
    frame.to_csv(folder / "t.csv", index_label="rownames")
    metric = "test_rmse" if task == "regression" else "test_accuracy"
    ours, wall = _search(folder, name, target, args, metric, "")
    row = f"| {name} | {len(frame)} | {task} | {ours:.3f} | "
    space = folder / "space.py"
    theirs = _gradient_boosting(load_dataset(load_space(space), space), task)
    row += f"{theirs:.3f} | {metric.removeprefix('test_')} | {wall:.0f} |"
    if args.grace_one:
        ours_one, wall_one = _search(folder, f"{name}_grace1", target, args, metric, "asha(grace_period=1)")
        row += f" {ours_one:.3f} | {wall_one:.0f} |"
    return row


def _search(folder: Path, name: str, target: str, args: argparse.Namespace, metric: str,
            scheduler: str) -> tuple[float, float]:
    """Run one search as a user would; its best trial's test metric and its wall time."""
    space = folder / "space.py"
    space.write_text("from hpsearch import Search, asha, choice, layers, loguniform, uniform\n"
                     f"search = Search(data='csv:t.csv', target={target!r}, num_samples={args.trials}, "
                     f"max_epochs={args.epochs}, experiment={name!r}, params={SPACE}"
                     + (f", scheduler={scheduler}" if scheduler else "") + ")\n")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "hpsearch", "run", str(space), "--executor", "local", "--no-plots", "-q",
                    "--tracking-uri", uri], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    [parent] = client.search_runs([experiment.experiment_id], "tags.`hpsearch.kind` = 'search'")
    return parent.data.metrics[f"best_{metric}"], wall


def _gradient_boosting(data, task: str) -> float:  # noqa: ANN001 - hpsearch.data.dataset.Dataset
    """HistGradientBoosting on the search's own split and preprocessing: its test accuracy or RMSE."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if task == "regression":
        model = HistGradientBoostingRegressor(random_state=0).fit(data.train.X, data.train.y)
        error = (model.predict(data.test.X) - data.test.y) * data.target_std  # back to the target's units
        return float(np.sqrt(np.mean(error**2)))
    model = HistGradientBoostingClassifier(random_state=0).fit(data.train.X, data.train.y)
    return float(np.mean(model.predict(data.test.X) == data.test.y))


if __name__ == "__main__":
    main()

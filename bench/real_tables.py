"""The corpus benchmark: what a search hands out on real tables, against a default and a tuned gradient-boosted tree.

    PYTHONPATH=. python bench/real_tables.py run --out today.jsonl --checkout /work/main --seeds 0,1,2
    PYTHONPATH=. python bench/real_tables.py run --out after.jsonl --seeds 0,1,2
    PYTHONPATH=. python bench/real_tables.py table today.jsonl after.jsonl      # the Markdown of docs/benchmarks.md

For every table of ``bench/corpus.py`` (its TUNE and HOLDOUT parts) and every seed, the table is written to a CSV
as R writes it, and a space file with the corpus's space and budget (``corpus.USER_SPACE``, 8 trials x 20 epochs,
``seed=S``) is searched as a user runs it: ``python -m hpsearch run space.py --no-plots -q``, the space file's
default executor, in a process of its own whose ``PYTHONPATH`` is ``--checkout`` (today's code, or this one). What
the search's parent run records is read back: the best trial's test metric and, where the code has them, the
ensemble's and the in-product tree's; the wall time is the command's.

Beside each search, scikit-learn's ``HistGradientBoosting*`` as ``shared/reference/hgb_baseline.py`` fits it, on
the columns the network gets (hpsearch's column plan: ids such as R's row names left out, dates as numbers; text
ordinal-encoded, missing values left to the tree): at default settings on the training and validation rows, and
tuned (20 Optuna TPE trials over learning rate, leaves, depth, minimum leaf size and l2, fitted on the training
rows and scored on the validation rows, the best refit on both), scored on exactly the test rows of the search
(hpsearch's own split of the same seed), on one thread. They are fitted once per table and seed and cached
(``--cache``).

Each search's figures go to ``--out`` as one JSON line as soon as it ends, so a long run can be stopped and
continued (a line already there is not run again). ``table`` prints the Markdown: one row per table (mean over the
seeds, and their spread), today's and this code's published model beside the trees, and the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import corpus  # noqa: E402

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
DEFAULT_CACHE = Path.home() / ".cache" / "hpsearch-bench" / "trees.json"
TUNED_TRIALS = 20


# ------------------------------------------------------------------------------------------------ running
def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    done = {(r["table"], r["seed"]) for r in _read_lines(out)}
    wanted = set(args.tables.split(",")) if args.tables else None
    checkout = Path(args.checkout).resolve()
    for seed in [int(s) for s in args.seeds.split(",")]:
        for table in corpus.CORPUS:
            if (wanted and table.name not in wanted) or (table.name, seed) in done:
                continue
            with tempfile.TemporaryDirectory(prefix=f"bench-{table.name}-") as folder:
                row = _one(Path(folder), table, seed, checkout, args)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def _one(folder: Path, table: corpus.Table, seed: int, checkout: Path, args: argparse.Namespace) -> dict[str, Any]:
    corpus.write_csv(table.frame(), folder / "t.csv")
    budget = {**corpus.USER_BUDGET, **({"num_samples": args.trials} if args.trials else {}),
              **({"max_epochs": args.epochs} if args.epochs else {})}
    extra = "".join(f", {field}" for field in args.field)
    params = corpus.USER_SPACE[:-1] + "".join(f", {name!r}: {value}" for name, value in
                                              (param.split("=", 1) for param in args.param)) + "}"
    (folder / "space.py").write_text(
        "from hpsearch import Search, choice, layers, loguniform, uniform\n"
        f"search = Search(data='csv:t.csv', target={table.target!r}, params={params}, "
        f"num_samples={budget['num_samples']}, max_epochs={budget['max_epochs']}, seed={seed}, "
        f"experiment={table.name!r}{extra})\n")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hpsearch", "run", "space.py", "--no-plots", "-q",
                           "--tracking-uri", uri], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    row: dict[str, Any] = {"table": table.name, "seed": seed, "part": _part(table), "task": table.task,
                           "rows": len(pd.read_csv(folder / "t.csv")), "wall_s": round(wall, 1),
                           "checkout": str(checkout), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "load": round(os.getloadavg()[0], 1)}
    if done.returncode != 0:
        row["error"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
    else:
        row.update(_search_figures(uri, table.name, table.task))
        if args.sizes:
            row["sizes"] = _ensembles(folder, uri, table, [int(n) for n in args.sizes.split(",")])
    row.update(_trees(folder / "t.csv", table, seed, Path(args.cache)))
    return row


def _part(table: corpus.Table) -> str:
    return "tune" if table in corpus.TUNE else "holdout"


def _search_figures(uri: str, experiment: str, task: str) -> dict[str, Any]:
    """What the search's parent run holds: the best trial's test metric, the ensemble's and the tree's if any."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    [parent] = client.search_runs([found.experiment_id], "tags.`hpsearch.kind` = 'search'")
    metrics = parent.data.metrics
    key = _metric(task)
    figures = {"best": metrics.get(f"best_test_{key}"), "ensemble": metrics.get(f"ensemble_test_{key}"),
               "refit": metrics.get(f"refit_test_{key}"), "tree_in_product": metrics.get(f"tree_test_{key}"),
               "members": metrics.get("ensemble_size"), "cv": parent.data.params.get("cv"),
               "published": parent.data.tags.get("hpsearch.published")}
    return figures


def _ensembles(folder: Path, uri: str, table: corpus.Table, sizes: list[int]) -> dict[str, float]:
    """The test metric of the ensemble this code chooses with each number of steps, from the search's trials."""
    from mlflow import MlflowClient

    from hpsearch.data.dataset import preprocessing_state
    from hpsearch.data.sources import load_dataset
    from hpsearch.results import ensemble
    from hpsearch.space import load_space
    from hpsearch.tracking.reader import read_trials
    from hpsearch.tracking.schema import rank

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(table.name)
    [parent] = client.search_runs([found.experiment_id], "tags.`hpsearch.kind` = 'search'")
    metric, mode = parent.data.params["metric"], parent.data.params["mode"]
    ranked = rank(read_trials(client, found.experiment_id, parent.info.run_id), metric, mode)
    for trial in ranked:  # each trial's model, fetched once
        trial.model_dir = client.download_artifacts(trial.run_id, "model", str(folder / trial.name))
    data = load_dataset(load_space(folder / "space.py"), folder / "space.py")
    holdout, state = ensemble.holdout_of(data), preprocessing_state(data.preprocessor)
    figures = {}
    for steps in sizes:
        chosen = ensemble.choose(None, ranked, holdout, state, steps=steps, metric=metric, mode=mode)
        if chosen is not None:
            figures[str(steps)] = chosen.metrics[f"test_{_metric(table.task)}"]
            figures[f"{steps}_members"] = len(chosen.members)
    return figures


def _metric(task: str) -> str:
    return "rmse" if task == "regression" else "accuracy"


# ------------------------------------------------------------------------------------------------ trees
def _trees(csv: Path, table: corpus.Table, seed: int, cache: Path) -> dict[str, Any]:
    """The default and the tuned tree of ``hgb_baseline.py`` on the search's test rows (cached by table, seed)."""
    key = f"{table.name}/{seed}/{corpus.MAX_ROWS}/plan"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        known[key] = _fit_trees(csv, table, seed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1))
    return known[key]


def _fit_trees(csv: Path, table: corpus.Table, seed: int) -> dict[str, Any]:
    import optuna
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, root_mean_squared_error
    from sklearn.preprocessing import OrdinalEncoder

    from hpsearch.data.targets import encode_target, split_indices
    from hpsearch.model.columns import apply_plan, plan_columns

    frame = pd.read_csv(csv).dropna(subset=[table.target])
    X, y = frame.drop(columns=[table.target]), frame[table.target]
    codes, _ = encode_target(y, table.task, table.name)
    train, val, test = split_indices(codes, table.task, (0.7, 0.15, 0.15), seed)  # the search's own rows
    X = apply_plan(plan_columns(X.iloc[train])[0], X)  # the network's columns: no row names, dates as numbers
    X = X.astype({c: str for c in X.select_dtypes(exclude=["number", "bool"]).columns})
    rest = np.concatenate([train, val])

    def model(**params: Any) -> Any:
        from sklearn.pipeline import make_pipeline

        cats = list(X.select_dtypes(exclude=["number", "bool"]).columns)
        encode = make_column_transformer(
            (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1), cats),
            remainder="passthrough")
        tree = HistGradientBoostingRegressor if table.task == "regression" else HistGradientBoostingClassifier
        return make_pipeline(encode, tree(random_state=0, **params))

    def score(rows: np.ndarray, fitted: Any) -> float:
        predicted = fitted.predict(X.iloc[rows])
        if table.task == "regression":
            return float(root_mean_squared_error(y.iloc[rows], predicted))
        return float(accuracy_score(y.iloc[rows], predicted))

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one thread: the cores are the searches'; OpenMP threads on busy cores crawl
    started = time.perf_counter()
    default = score(test, model().fit(X.iloc[rest], y.iloc[rest]))
    default_s = time.perf_counter() - started
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = dict(learning_rate=trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                      max_leaf_nodes=trial.suggest_int("max_leaf_nodes", 8, 128, log=True),
                      max_depth=trial.suggest_categorical("max_depth", [None, 3, 5, 8]),
                      min_samples_leaf=trial.suggest_int("min_samples_leaf", 5, 100, log=True),
                      l2_regularization=trial.suggest_float("l2_regularization", 1e-6, 10.0, log=True))
        return score(val, model(**params).fit(X.iloc[train], y.iloc[train]))

    started = time.perf_counter()
    study = optuna.create_study(direction="minimize" if table.task == "regression" else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=TUNED_TRIALS)
    tuned = score(test, model(**study.best_params).fit(X.iloc[rest], y.iloc[rest]))
    return {"tree": default, "tree_s": round(default_s, 2), "tuned_tree": tuned,
            "tuned_tree_s": round(time.perf_counter() - started, 1), "test_rows": len(test)}


# ------------------------------------------------------------------------------------------------ the table
def table(args: argparse.Namespace) -> None:
    today = _by_table(_read_lines(Path(args.today)), Path(args.cache))
    after = _by_table(_read_lines(Path(args.after)), Path(args.cache)) if args.after else {}
    print(_markdown(today, after))


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _by_table(rows: list[dict[str, Any]], cache: Path) -> dict[str, list[dict[str, Any]]]:
    """The lines of each table, with the trees of its seed (from the cache, fitted again where missing)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "error" not in row:
            grouped.setdefault(row["table"], []).append({**row, **_trees_of(corpus.table(row["table"]), row["seed"],
                                                                                  cache)})
    return grouped


def _trees_of(table_: corpus.Table, seed: int, cache: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{table_.name}-") as folder:
        csv = Path(folder) / "t.csv"
        corpus.write_csv(table_.frame(), csv)
        return _trees(csv, table_, seed, cache)


def published(row: dict[str, Any]) -> float | None:
    """What the search hands out: the refit model or the ensemble where the code has them, else the best trial."""
    return next((row[k] for k in ("refit", "ensemble", "best") if row.get(k) is not None), None)


def behind(value: float | None, tree: float, task: str) -> float | None:
    """How far ``value`` is behind the tree, as a fraction of the tree's metric (negative: ahead)."""
    if value is None:
        return None
    return (value - tree) / tree if task == "regression" else (tree - value) / tree


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _spread(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.stdev(known) if len(known) > 1 else None


def _markdown(today: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| table | part | rows | metric | seeds | default tree | tuned tree | today: best trial | "
             "today vs tree | today wall s | " + ("best trial | ensemble | tree in product | published vs tree | "
                                                   "wall s |" if after else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|---|---|" if after else "")]
    summary: dict[str, list[tuple[str, int, float | None, float | None]]] = {"today": [], "after": []}
    for table_ in corpus.CORPUS:
        rows = today.get(table_.name, [])
        new = after.get(table_.name, [])
        if not rows and not new:
            continue
        base = rows or new
        task, size = base[0]["task"], base[0]["rows"]
        tree = _mean([r["tree"] for r in base])
        cells = [table_.name, _part(table_), str(size), _metric(task), str(len(base)), _fmt(tree),
                 _fmt(_mean([r["tuned_tree"] for r in base]))]
        gaps = [behind(published(r), r["tree"], task) for r in rows]
        cells += [_fmt(_mean([r["best"] for r in rows])), _pct(_mean(gaps), _spread(gaps)),
                  _fmt(_mean([r["wall_s"] for r in rows]), 0)]
        summary["today"].append((table_.name, size, _mean(gaps), _spread(gaps)))
        if after:
            gaps_after = [behind(published(r), r["tree"], task) for r in new]
            cells += [_fmt(_mean([r["best"] for r in new])), _fmt(_mean([r.get("ensemble") for r in new])),
                      _fmt(_mean([r.get("tree_in_product") for r in new])),
                      _pct(_mean(gaps_after), _spread(gaps_after)), _fmt(_mean([r["wall_s"] for r in new]), 0)]
            summary["after"].append((table_.name, size, _mean(gaps_after), _spread(gaps_after)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for label, entries in summary.items():
        if entries and entries[0][2] is not None:
            lines.append(_targets(label, entries))
    if summary["after"]:
        lines.append(_against_today(summary["today"], summary["after"]))
    lines += _sizes(after or today)
    return "\n".join(lines)


def _against_today(today: list[tuple[str, int, float | None, float | None]],
                   after: list[tuple[str, int, float | None, float | None]]) -> str:
    """Tables where the published model fell behind today's by more than the noise: the larger spread over seeds
    of the two (a table measured with one seed has no noise figure, and is not judged)."""
    before = {name: (gap, spread) for name, _, gap, spread in today}
    worse = []
    for name, _, gap, spread in after:
        old, old_spread = before.get(name, (None, None))
        noise = max(s for s in (spread, old_spread) if s is not None) if (spread or old_spread) else None
        if gap is not None and old is not None and noise is not None and gap - old > noise:
            worse.append(f"{name} ({old:+.1%} -> {gap:+.1%}, noise {noise:.1%})")
    return (f"- against today's published model, behind by more than the noise (the larger spread over seeds): "
            f"{', '.join(worse) or 'none'}.")


def _sizes(grouped: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The ensembles of each number of greedy steps (``--sizes``) against the best trial alone, by part: the mean
    change of the test metric, as a share of the tree's (negative: better)."""
    lines = []
    for part, tables in (("tune", corpus.TUNE), ("holdout", corpus.HOLDOUT)):
        changes: dict[str, list[float]] = {}
        for table_ in tables:
            for row in grouped.get(table_.name, []):
                sizes = row.get("sizes") or {}
                for steps, value in sizes.items():
                    if "_" not in steps and "1" in sizes:
                        changes.setdefault(steps, []).append(behind(value, row["tree"], row["task"])
                                                             - behind(sizes["1"], row["tree"], row["task"]))
        if changes:
            shown = ", ".join(f"{steps} steps {statistics.fmean(v):+.2%} ({sum(x < -1e-4 for x in v)} better, "
                              f"{sum(x > 1e-4 for x in v)} worse of {len(v)})"
                              for steps, v in sorted(changes.items(), key=lambda kv: int(kv[0])) if steps != "1")
            lines.append(f"- ensemble against the best trial alone, {part} tables (table-seeds): {shown}.")
    return lines


def _targets(label: str, entries: list[tuple[str, int, float | None, float | None]]) -> str:
    """The issue's targets: >= 500 rows within 2 % of the default tree and ahead on 3/4; < 500 rows within 5 %."""
    large = [(n, g) for n, size, g, _ in entries if size >= 500 and g is not None]
    small = [(n, g) for n, size, g, _ in entries if size < 500 and g is not None]
    ahead = [n for n, g in large if g < 0]
    far = [f"{n} ({g:+.1%})" for n, g in large if g > 0.02]
    far_small = [f"{n} ({g:+.1%})" for n, g in small if g > 0.05]
    return (f"- {label}: >= 500 rows: ahead of the default tree on {len(ahead)} of {len(large)} "
            f"(target {-(-3 * len(large) // 4)}); more than 2 % behind on {len(far)}: {', '.join(far) or 'none'}. "
            f"< 500 rows: more than 5 % behind on {len(far_small)} of {len(small)}: {', '.join(far_small) or 'none'}.")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if digits == 0 else f"{value:.{digits}g}"


def _pct(value: float | None, spread: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.1%}" + (f" ±{spread:.1%}" if spread is not None else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True)
    go = commands.add_parser("run", help="search every table of the corpus, one JSON line per table and seed")
    go.add_argument("--out", required=True, help="the JSON lines file (appended; lines already there are kept)")
    go.add_argument("--checkout", default=str(REPO), help="the hpsearch code the searches run (default: this one)")
    go.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    go.add_argument("--tables", help="comma-separated names (default: the whole corpus)")
    go.add_argument("--trials", type=int, help=f"trials (default {corpus.USER_BUDGET['num_samples']})")
    go.add_argument("--epochs", type=int, help=f"epochs (default {corpus.USER_BUDGET['max_epochs']})")
    go.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                    help="another field of the space file's Search, as Python (repeatable): ensemble=False")
    go.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="another hyperparameter of the space, as Python (repeatable): "
                         "numeric_encoding=choice(['standard', 'piecewise_linear'])")
    go.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the trees' figures are kept")
    go.add_argument("--sizes", help="also the ensembles of these numbers of steps (this code's), e.g. 5,10,25,50")
    go.set_defaults(command=run)
    show = commands.add_parser("table", help="the Markdown table of one run's lines, or of today's and after's")
    show.add_argument("today")
    show.add_argument("after", nargs="?")
    show.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the trees' figures are kept")
    show.set_defaults(command=table)
    args = parser.parse_args()
    args.command(args)


if __name__ == "__main__":
    main()

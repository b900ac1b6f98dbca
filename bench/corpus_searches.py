"""Searches of the real-table corpus as users run them: what the defaults buy, and what successive halving costs.

    PYTHONPATH=. python bench/corpus_searches.py run --out runs.jsonl [--tables mpg,fair] [--seeds 0,1,2]
        [--extra '{"lr_schedule": "onecycle"}'] [--scheduler fifo]
    PYTHONPATH=. python bench/corpus_searches.py compare base.jsonl other.jsonl ...
    PYTHONPATH=. python bench/corpus_searches.py asha runs.jsonl [--part tune]
    PYTHONPATH=. python bench/corpus_searches.py time --against ../main [--tables mpg,computers] [--repeats 3]

``run`` searches every table of ``bench/corpus.py`` as a user would (its USER_SPACE, with the ``--extra`` values
added, a list as a choice, and USER_BUDGET: 8 trials x 20 epochs; the batched executor; the search's seed, which
also draws the split), and appends one JSON line per search to ``--out``: the best trial's test metric, the default
HistGradientBoosting's on the same test rows (``../shared/reference/hgb_baseline.py``, or
``$HPSEARCH_REFERENCE_DIR``), the wall time, and each trial's validation curve read back from MLflow.

``compare`` puts the files' test metrics side by side, per table and per part of the corpus (the geometric mean of
the RMSE ratio to the first file, the mean accuracy change, and the wins against the tree).

``asha`` replays Optuna's successive-halving pruner (the one the in-process and batched executors use at ASHA's
rungs) on the curves of searches run with ``--scheduler fifo`` (every trial trains all its epochs), trial after
trial in the order they were proposed, for each grace period and reduction factor: how often it stops the trial
that won without it (the best value at its best epoch), how often the winner of the pruned search is another
trial, how much worse that trial's validation value is, and the share of the epochs it trains. A pruned trial's
value is its best epoch's up to where it was stopped.

``time`` runs the same searches (USER_SPACE, 8 x 20, the batched executor, seed 0, no figures; ``--scheduler fifo``
for the same epochs in both) with this checkout
and with another one (``--against``: another branch's worktree), interleaved, each as its own process, and prints
the median wall time and CPU time (of the process and its children) of each, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REFERENCE = Path(os.environ.get("HPSEARCH_REFERENCE_DIR", REPO.parent / "shared" / "reference"))

from bench.corpus import CORPUS, HOLDOUT, TUNE, USER_BUDGET, USER_SPACE, write_csv  # noqa: E402

#: (grace period, reduction factor) pairs replayed; None is no early stopping.
SCHEDULES = [None, (1, 3), (2, 3), (4, 3), (5, 3), (7, 3), (2, 2), (4, 2), (5, 2), (10, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--tables")
    run.add_argument("--seeds", default="0,1,2")
    run.add_argument("--extra", default="{}", help="values added to the user's space, as a JSON object")
    run.add_argument("--scheduler", default="asha", choices=["asha", "fifo"])
    compare = commands.add_parser("compare")
    compare.add_argument("results", type=Path, nargs="+")
    asha = commands.add_parser("asha")
    asha.add_argument("results", type=Path)
    asha.add_argument("--part", choices=["tune", "holdout", "all"], default="all")
    timing = commands.add_parser("time")
    timing.add_argument("--against", type=Path, required=True)
    timing.add_argument("--tables", default="mpg,fair,computers,diamonds")
    timing.add_argument("--repeats", type=int, default=3)
    timing.add_argument("--scheduler", default="asha", choices=["asha", "fifo"],
                        help="fifo: every trial trains every epoch in both, so they train the same epochs")
    args = parser.parse_args()
    {"run": _run, "compare": _compare, "asha": _summary, "time": _time}[args.command](args)


def _time(args: argparse.Namespace) -> None:
    import resource

    checkouts = {"this": REPO, "against": args.against.resolve()}
    print(f"| table | wall s, this | wall s, {args.against} | ratio | CPU s, this | CPU s, against | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.tables.split(","):
        table = next(t for t in CORPUS if t.name == name)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in checkouts}
        with tempfile.TemporaryDirectory(prefix=f"time-{name}-") as folder:
            folder = Path(folder)
            write_csv(table.frame(), folder / "t.csv")
            budget = ", ".join(f"{k}={v}" for k, v in USER_BUDGET.items())
            (folder / "space.py").write_text("from hpsearch import Search, choice, layers, loguniform, uniform\n"
                                             f"search = Search(data='csv:t.csv', target={table.target!r}, "
                                             f"params={USER_SPACE}, {budget}, scheduler={args.scheduler!r})\n")
            for repeat in range(args.repeats):
                for key, checkout in checkouts.items():
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    started = time.monotonic()
                    subprocess.run([sys.executable, "-m", "hpsearch", "run", "space.py", "--executor", "batched",
                                    "--no-plots", "-q", "--experiment", f"{key}{repeat}"], cwd=folder, check=True,
                                   env={**os.environ, "PYTHONPATH": str(checkout)}, stdout=subprocess.DEVNULL)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                    times[key].append((time.monotonic() - started, cpu))
        wall = {k: float(np.median([w for w, _ in v])) for k, v in times.items()}
        cpu = {k: float(np.median([c for _, c in v])) for k, v in times.items()}
        print(f"| {name} | {wall['this']:.1f} | {wall['against']:.1f} | {wall['this'] / wall['against']:.2f} | "
              f"{cpu['this']:.1f} | {cpu['against']:.1f} | {cpu['this'] / cpu['against']:.2f} |", flush=True)


def _run(args: argparse.Namespace) -> None:
    from mlflow import MlflowClient

    from hpsearch.cli.main import main as hpsearch

    done = set()
    if args.out.is_file():
        done = {(r["table"], r["seed"]) for r in map(json.loads, args.out.read_text().splitlines())}
    for table in CORPUS:
        if args.tables and table.name not in args.tables.split(","):
            continue
        for seed in map(int, args.seeds.split(",")):
            extra = json.loads(args.extra)
            if (table.name, seed) in done or ("label_smoothing" in extra and table.task == "regression") or (
                    "target_transform" in extra and table.task != "regression"):
                continue  # done, or a choice the table's task refuses
            with tempfile.TemporaryDirectory(prefix=f"asha-{table.name}-") as folder:
                folder = Path(folder)
                write_csv(table.frame(), folder / "t.csv")
                budget = ", ".join(f"{k}={v}" for k, v in USER_BUDGET.items())
                params = USER_SPACE[:-1] + "".join(f", {k!r}: {_value(v)}" for k, v in extra.items()) + "}"
                space = folder / "space.py"
                space.write_text("from hpsearch import Search, choice, layers, loguniform, uniform\n"
                                 f"search = Search(data='csv:t.csv', target={table.target!r}, params={params}, "
                                 f"{budget}, scheduler={args.scheduler!r}, seed={seed}, experiment='asha')\n")
                uri = f"sqlite:///{folder / 'mlflow.db'}"
                started = time.monotonic()
                code = hpsearch(["run", str(space), "--executor", "batched", "--no-plots", "-q", "--tracking-uri", uri])
                wall = time.monotonic() - started
                client = MlflowClient(uri)
                experiment = client.get_experiment_by_name("asha").experiment_id
                [parent] = client.search_runs([experiment], "tags.`hpsearch.kind` = 'search'")
                metric, mode = parent.data.params["metric"], parent.data.params["mode"]
                trials = client.search_runs([experiment], "tags.`hpsearch.kind` = 'trial'")
                curves = {}
                for trial in sorted(trials, key=lambda r: r.data.tags["hpsearch.trial_id"]):
                    history = client.get_metric_history(trial.info.run_id, metric)
                    curves[trial.data.tags["hpsearch.trial_id"]] = [m.value for m in sorted(history,
                                                                                          key=lambda m: m.step)]
                test = parent.data.metrics.get("best_test_rmse", parent.data.metrics.get("best_test_accuracy"))
                row = {"table": table.name, "seed": seed, "exit": code, "metric": metric, "mode": mode,
                       "test": test, "tree": _tree(folder / "t.csv", table.target, seed), "wall_s": round(wall, 1),
                       "extra": json.loads(args.extra), "scheduler": args.scheduler, "curves": curves}
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(table.name, seed, code, flush=True)


def _value(value: object) -> str:
    """A JSON value as the space file writes it: a list is a choice."""
    return f"choice({value!r})" if isinstance(value, list) else repr(value)


def _tree(csv: Path, target: str, seed: int) -> float | None:
    """The default HistGradientBoosting's test metric on the search's test rows (the reference script splits with
    seed 0, as a search with seed 0 does; other seeds are not compared)."""
    script = REFERENCE / "hgb_baseline.py"
    if seed != 0 or not script.is_file():
        return None
    out = subprocess.run([sys.executable, str(script), str(csv), target], capture_output=True, text=True).stdout
    found = re.search(r"default HGB: test \w+ ([0-9.eE+-]+)", out)
    return float(found.group(1)) if found else None


def _compare(args: argparse.Namespace) -> None:
    files = [[json.loads(line) for line in path.read_text().splitlines() if line.strip()] for path in args.results]
    by = [{(r["table"], r["seed"]): r for r in rows} for rows in files]
    names = [path.stem for path in args.results]
    print("| table | task | " + " | ".join(names) + " | default tree (seed 0) |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for table in CORPUS:
        means = [np.mean([r["test"] for (t, _), r in b.items() if t == table.name] or [np.nan]) for b in by]
        tree = next((r["tree"] for b in by for (t, s), r in b.items() if t == table.name and r.get("tree")), None)
        if not np.isnan(means[0]):
            cells = " | ".join(f"{m:.4g}" for m in means)
            print(f"| {table.name} | {table.task} | {cells} | {tree if tree is not None else '-'} |")
    for part, tables in (("tune", TUNE), ("holdout", HOLDOUT)):
        for name, b in zip(names[1:], by[1:], strict=True):
            ratios, changes = [], []
            for table in tables:
                pairs = [(by[0][k]["test"], b[k]["test"]) for k in b if k[0] == table.name and k in by[0]]
                if not pairs:
                    continue
                base, other = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
                (ratios if table.task == "regression" else changes).append(other / base if table.task ==
                                                                          "regression" else other - base)
            ratio = f"{np.exp(np.mean(np.log(ratios))):.3f}" if ratios else "-"
            change = f"{np.mean(changes):+.4f}" if changes else "-"
            print(f"\n{part}: {name} against {names[0]}: RMSE ratio {ratio} ({len(ratios)} tables), "
                  f"accuracy change {change} ({len(changes)} tables)")


def _replay(curves: list[list[float]], mode: str, schedule: tuple[int, int] | None) -> list[tuple[float, int]]:
    """Each trial's value (its best epoch's, up to where it stopped) and epochs under a successive halving."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.NopPruner() if schedule is None
              else optuna.pruners.SuccessiveHalvingPruner(min_resource=schedule[0], reduction_factor=schedule[1]))
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize", pruner=pruner)
    best = min if mode == "min" else max
    outcome = []
    for curve in curves:
        trial = study.ask()
        epochs = len(curve)
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
            if trial.should_prune():
                epochs = epoch
                break
        value = best(curve[:epochs])
        study.tell(trial, value if epochs == len(curve) else None,
                   state=optuna.trial.TrialState.COMPLETE if epochs == len(curve) else optuna.trial.TrialState.PRUNED)
        outcome.append((value, epochs))
    return outcome


def _summary(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    part = {"tune": {t.name for t in TUNE}, "holdout": {t.name for t in HOLDOUT}, "all": {t.name for t in CORPUS}}
    rows = [r for r in rows if r["table"] in part[args.part] and r["curves"]]
    print(f"{len(rows)} searches ({len({r['table'] for r in rows})} tables x seeds), 8 trials x 20 epochs each.\n")
    print("| grace period, reduction factor | winner stopped | another winner | its validation value, worse by "
          "(mean, worst) | epochs trained |")
    print("|---|---|---|---|---|")
    for schedule in SCHEDULES:
        stopped = other = 0
        regrets, shares = [], []
        for row in rows:
            curves = [c for c in row["curves"].values() if c]
            full = _replay(curves, row["mode"], None)
            pruned = _replay(curves, row["mode"], schedule)
            pick = (np.argmin if row["mode"] == "min" else np.argmax)
            winner, chosen = int(pick([v for v, _ in full])), int(pick([v for v, _ in pruned]))
            stopped += pruned[winner][1] < len(curves[winner])
            other += chosen != winner
            a, b = full[winner][0], pruned[chosen][0]
            regrets.append(abs(b - a) / abs(a) if a else 0.0)
            shares.append(sum(e for _, e in pruned) / sum(len(c) for c in curves))
        name = "fifo (none)" if schedule is None else f"{schedule[0]}, {schedule[1]}"
        print(f"| {name} | {stopped} of {len(rows)} | {other} of {len(rows)} | {np.mean(regrets):.1%}, "
              f"{max(regrets):.1%} | {np.mean(shares):.0%} |")


if __name__ == "__main__":
    main()

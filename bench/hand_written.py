# ruff: noqa: E501 - the table rows read better on one line
"""hpsearch against the Optuna script a practised user writes by hand: two parts of ``run_bench.py``.

    PYTHONPATH=. python bench/run_bench.py --parts scripts,startup --write          # 3 repeats, about 50 min
    PYTHONPATH=. python bench/run_bench.py --parts scripts --base /tmp/main --quick # A/B against another checkout

``scripts``: three searches, each run by ``../shared/reference/optuna_digits.py`` (digits, 24 x 20 and 64 x 50)
or ``optuna_many.py`` (1,000 trials x 5 epochs on breast cancer; also ``optuna_many_mlflow.py``, the same with the
MLflow tracking a user adds by hand), and by hpsearch from a space file of the same search (``bench/spaces/``) on
each executor, as a user runs it: ``python -m hpsearch run SPACE --executor E -q``, full tracking and figures.
``startup``: a search of 1 trial of 1 epoch on ``sklearn:digits`` against the floor, a process that imports
torch and Optuna and loads the digits. ``--base DIR`` adds the hpsearch rows of another checkout (its
``PYTHONPATH``), run interleaved with this one's: an A/B on the same machine at the same time.

Each command is its own process in a folder of its own per row (the row's MLflow store created before timing);
the rows of a search run one after the other in each repeat, in an order that alternates between repeats;
each figure is the median over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402 - the bench's helpers: timed runs, fresh folders, medians

BENCH_SPACES = rb.REPO / "bench" / "spaces"
EXECUTORS = ("batched", "local", "ray")
UNTRACKED, TRACKED = "untracked script", "hand-tracked script"
FLOOR = 'import torch, optuna; from sklearn.datasets import load_digits; load_digits()'
SEARCHES = {  # name: the reference script, its tracked twin, the space file, (trials, epochs), the same --quick
    "digits 24 x 20": ("optuna_digits.py", None, "digits_optuna.py", ("24", "20"), ("8", "5")),
    "digits 64 x 50": ("optuna_digits.py", None, "digits_optuna.py", ("64", "50"), ("16", "5")),
    "1,000 trials x 5 epochs": ("optuna_many.py", "optuna_many_mlflow.py", "many_optuna.py", ("1000", "5"),
                                ("100", "5")),
}


def _trees(cfg: argparse.Namespace) -> dict[str, Path]:
    """The checkouts whose hpsearch rows run: this one, and ``--base`` when given."""
    trees = {"": rb.REPO}
    if getattr(cfg, "base", None):
        trees[" (base)"] = Path(cfg.base).resolve()
    return trees


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def _hpsearch_cmd(space: Path, executor: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "hpsearch", "run", str(space), "--executor", executor, "-q", *options]


def best_of_summary(stdout: str) -> float | None:
    """The best trial's value from the summary ``hpsearch run`` prints (its best-trials table's first row)."""
    lines = stdout.splitlines()
    for at, line in enumerate(lines):
        if line.startswith("best ") and " trials by " in line and at + 2 < len(lines):
            metric = line.split(" trials by ", 1)[1].split()[0]
            header, first = lines[at + 1].split(), lines[at + 2].split()
            return float(first[header.index(metric)]) if metric in header else None
    return None


def _timed(cmd: list[str], folder: Path, env: dict[str, str]) -> tuple[float, str, float, float]:
    """Wall seconds, stdout, CPU seconds (the command and the children it waited for) and the load average before
    it. A command that fails runs once more (on a machine shared with others' tests, a Ray worker can be killed
    or fail to start); its first error is shown."""
    for attempt in (1, 2):
        load = os.getloadavg()[0]
        try:
            wall, out = rb.timed(cmd, folder, env=env, timeout=3600)
            return wall, out, rb.CPU[-1], load
        except RuntimeError as err:
            if attempt == 2:
                raise
            print(f"failed, run again: {str(err)[-1500:]}", file=sys.stderr, flush=True)
    raise AssertionError("unreachable")


def _warm(tree: Path, folder: Path, space: Path) -> None:
    """Create the folder's MLflow store (once per project folder, not timed)."""
    rb.timed(_hpsearch_cmd(space, "local", "--num-samples", "1", "--max-epochs", "1", "--experiment", "warm-up",
                           "--no-plots"), folder, env=_env(tree))


def part_scripts(cfg: argparse.Namespace, root: Path) -> dict:
    """The table: every search by the scripts and by each executor, interleaved, medians."""
    result = {}
    for name, (script, tracked, space_name, size, quick) in SEARCHES.items():
        trials, epochs = quick if cfg.quick else size
        space = BENCH_SPACES / space_name
        rows: dict[str, tuple[list[str], Path, dict[str, str]]] = {
            UNTRACKED: ([sys.executable, str(rb.REFERENCE / script), trials, epochs], rb.fresh(root, "script"), rb.ENV)}
        if tracked:
            folder = rb.fresh(root, "tracked")
            rb.timed([sys.executable, str(rb.REFERENCE / tracked), "1", "1"], folder)  # its store, created untimed
            rows[TRACKED] = ([sys.executable, str(rb.REFERENCE / tracked), trials, epochs], folder, rb.ENV)
        for suffix, tree in _trees(cfg).items():
            for executor in EXECUTORS:
                folder = rb.fresh(root, executor)
                _warm(tree, folder, space)
                rows[executor + suffix] = (_hpsearch_cmd(space, executor, "--num-samples", trials, "--max-epochs", epochs),
                                           folder, _env(tree))
        runs: dict[str, dict[str, list]] = {row: {"wall": [], "best": [], "cpu": [], "load": []} for row in rows}
        for repeat in range(cfg.repeats):
            for row in (list(rows) if repeat % 2 == 0 else list(reversed(rows))):
                wall, out, cpu, load = _timed(*rows[row])
                best = rb.script_best(out) if "script" in row else best_of_summary(out)
                for key, value in (("wall", wall), ("best", best), ("cpu", cpu), ("load", load)):
                    runs[row][key].append(value)
                print(f"{name} | {row}: {wall:.1f} s, CPU {cpu:.1f} s, best {best}, load {load:.1f}", file=sys.stderr,
                      flush=True)
        result[name] = {"trials": trials, "epochs": epochs, "rows": {row: _summary(r) for row, r in runs.items()}}
    return result


def _summary(runs: dict[str, list]) -> dict:
    """Medians of a row's runs, and the runs themselves."""
    return {"wall": rb.median(runs["wall"]), "walls": runs["wall"], "cpu": rb.median(runs["cpu"]),
            "load": rb.median(runs["load"]), "best": rb.median([b for b in runs.get("best", []) if b is not None]),
            "bests": runs.get("best", [])}


def part_startup(cfg: argparse.Namespace, root: Path) -> dict:
    """A search of 1 trial of 1 epoch on sklearn:digits, in-process and on Ray, against the floor."""
    space = rb.SPACES / "digits.py"
    rows: dict[str, tuple[list[str], Path, dict[str, str]]] = {
        "floor: import torch, optuna; load_digits()": ([sys.executable, "-c", FLOOR], rb.fresh(root, "floor"), rb.ENV)}
    for suffix, tree in _trees(cfg).items():
        for executor in EXECUTORS:
            folder = rb.fresh(root, f"startup-{executor}")
            _warm(tree, folder, space)
            rows[executor + suffix] = (_hpsearch_cmd(space, executor, "--num-samples", "1", "--max-epochs", "1"),
                                       folder, _env(tree))
    runs: dict[str, dict[str, list]] = {row: {"wall": [], "cpu": [], "load": []} for row in rows}
    for repeat in range(cfg.repeats if cfg.quick else max(cfg.repeats, 5)):  # short: more repeats, same time
        for row in (list(rows) if repeat % 2 == 0 else list(reversed(rows))):
            wall, _, cpu, load = _timed(*rows[row])
            for key, value in (("wall", wall), ("cpu", cpu), ("load", load)):
                runs[row][key].append(value)
    return {row: _summary(r) for row, r in runs.items()}


def part_runcost(cfg: argparse.Namespace, root: Path) -> dict:
    """bench/run_cost.py in a fresh folder: a trial's MLflow run, MLflow's minimum against hpsearch's tracker."""
    runs = "30" if cfg.quick else "200"
    _, out = rb.timed([sys.executable, str(rb.REPO / "bench" / "run_cost.py"), "--runs", runs, "--repeats",
                       str(cfg.repeats)], rb.fresh(root, "runcost"))
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- report
def render(results: dict) -> list[str]:
    """The sections of the two parts, as markdown lines."""
    f = lambda x, d=1: "n/a" if x is None or x != x else f"{x:.{d}f}"  # noqa: E731
    runs = lambda xs: "[" + ", ".join(f(x) for x in xs) + "]"  # noqa: E731
    lines: list[str] = []
    if "scripts" in results:
        lines += ["## hpsearch against the hand-written Optuna scripts", "",
                  "`python -m hpsearch run bench/spaces/SPACE --executor E -q` (full MLflow tracking and figures) "
                  "against `../shared/reference/optuna_digits.py` / `optuna_many.py` (no tracking) and "
                  "`optuna_many_mlflow.py` (tracked by hand); x script = wall / the untracked script's wall, "
                  "x tracked = wall / the hand-tracked script's. Best value: the best trial's validation accuracy "
                  "(digits) or loss (breast cancer); the scripts' validation split is 20 % of the rows, hpsearch's "
                  "10 % (the same 80 % train on).", "",
                  "| search | command | wall s | x script | x tracked | best value | CPU s | CPU x script | load |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, s in results["scripts"].items():
            script, script_cpu = s["rows"][UNTRACKED]["wall"], s["rows"][UNTRACKED]["cpu"]
            tracked = s["rows"].get(TRACKED, {}).get("wall")
            for row, r in s["rows"].items():
                lines.append(f"| {name} | {row} | {f(r['wall'])} {runs(r['walls'])} | {f(r['wall'] / script, 2)} | "
                             f"{f(r['wall'] / tracked, 2) if tracked else ''} | {f(r['best'], 4)} | {f(r['cpu'])} | "
                             f"{f(r['cpu'] / script_cpu, 2)} | {f(r.get('load'))} |")
        lines += ["", "CPU s: the command's process and the children it waited for (the MLflow store's and the "
                  "figures' processes; not Ray's workers, so the ray rows' CPU is too low). load: the median "
                  "1-minute load average before the row's runs (the machine has 2 cores).", ""]
    if "startup" in results:
        s = results["startup"]
        floor = next(r["wall"] for row, r in s.items() if row.startswith("floor"))
        lines += ["## start-up: a search of 1 trial of 1 epoch on sklearn:digits", "",
                  "`python -m hpsearch run search_spaces/digits.py --num-samples 1 --max-epochs 1 --executor E -q` "
                  "(full tracking and figures, the store created before timing) against the floor, "
                  f"`python -c \"{FLOOR}\"`.", "", "| command | wall s | x floor | CPU s | CPU x floor | load |",
                  "|---|---|---|---|---|---|"]
        floor_cpu = next(r.get("cpu") for row, r in s.items() if row.startswith("floor"))
        for row, r in s.items():
            lines.append(f"| {row} | {f(r['wall'])} {runs(r['walls'])} | {f(r['wall'] / floor, 2)} | {f(r.get('cpu'))} | "
                         f"{f(r['cpu'] / floor_cpu, 2) if r.get('cpu') and floor_cpu else ''} | {f(r.get('load'))} |")
        lines.append("")
    if "runcost" in results:
        lines += ["## a trial's MLflow run: MLflow's own cost against hpsearch's tracker", "",
                  "`bench/run_cost.py`: the same trial (5 epochs of 3 metrics, 8 params, its model) written to a local "
                  "SQLite store in one process, run after run, in interleaved blocks; milliseconds per run "
                  "(medians of the blocks; CPU is the steadier figure on a shared machine).", "",
                  "| how | MLflow calls per run | CPU ms per run | wall ms per run |", "|---|---|---|---|"]
        for arm, r in results["runcost"].items():
            lines.append(f"| {arm} | {f(r['calls_per_run'])} | {f(r['cpu_ms'])} {runs(r['cpu_ms_blocks'])} | "
                         f"{f(r['wall_ms'])} |")
        lines += ["", "MLflow minimum: `create_run`, one `log_batch` (metrics, params, the status tag), `log_artifact` "
                  "(the weights), `set_terminated`. hpsearch's tracker makes the same calls and a second "
                  "`log_artifact` (the model's spec, `model.json`, beside its weights). The hand-tracked script: a "
                  "nested `mlflow.start_run`, a `log_batch` per epoch, `log_params`, `log_artifact`, the run's end.", ""]
    return lines

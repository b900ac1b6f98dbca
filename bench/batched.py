# ruff: noqa: E501 - the table rows read better on one line
"""Issue 20's targets: the batched executor against the Ray executor (and in-process), side by side, medians.

    PYTHONPATH=. python bench/batched.py                       # every part, 3 repeats (long: run on quiet cores)
    PYTHONPATH=. python bench/batched.py --only medium --repeats 1
    PYTHONPATH=. python bench/batched.py --quick               # smoke run: 1 repeat, small searches

Parts: ``medium`` (search_spaces/digits.py, 24 x 20, batched vs Ray, seeds 0, 1, 2: wall and best val accuracy),
``large`` (digits, 64 x 50, batched vs Ray), ``tiny200`` (search_spaces/reference.py with 200 trials: trials per
minute), ``overhead`` (48 trials of about 2 s each, every executor: (wall - start-up - ideal) / trials, start-up
being the same command with 1 trial of 1 epoch), ``mlflow`` (a batched search in-process: every MLflow client call
counted and timed, per trial). Each search runs as its own process through bench/_search.py (run_bench's helpers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402 - the existing bench's helpers: timed runs, ideal time, medians

PARTS = ("medium", "large", "tiny200", "overhead", "mlflow")


def _run(space: Path, work: Path, executor: str, *options: str) -> tuple[float, dict]:
    return rb.hpsearch(space, work, "--executor", executor, "--no-plots", *options)


def part_medium(cfg: argparse.Namespace, root: Path) -> dict:
    trials, epochs = ("8", "5") if cfg.quick else ("24", "20")
    work = rb.fresh(root, "medium")
    rb.warm_store(work)
    rows: dict[str, dict[str, list]] = {e: {"wall": [], "acc": []} for e in ("batched", "ray")}
    for seed in range(3 if not cfg.quick else 1):
        for _ in range(cfg.repeats):
            for executor, row in rows.items():
                wall, figures = _run(rb.SPACES / "digits.py", work, executor, "--num-samples", trials,
                                     "--max-epochs", epochs, "--seed", str(seed))
                row["wall"].append(wall), row["acc"].append(figures["best_val_accuracy"])
    result = _compare(rows, trials, epochs)
    # the floor of any search here: the same command with 1 trial of 1 epoch (imports, data, store, publishing)
    floor = [_run(rb.SPACES / "digits.py", work, "batched", "--num-samples", "1", "--max-epochs", "1")[0]
             for _ in range(cfg.repeats)]
    result["batched_1x1_wall"] = rb.median(floor)
    return result


def part_large(cfg: argparse.Namespace, root: Path) -> dict:
    trials, epochs = ("16", "5") if cfg.quick else ("64", "50")
    work = rb.fresh(root, "large")
    rb.warm_store(work)
    rows: dict[str, dict[str, list]] = {e: {"wall": [], "acc": []} for e in ("batched", "ray")}
    for _ in range(cfg.repeats):
        for executor, row in rows.items():
            wall, figures = _run(rb.SPACES / "digits.py", work, executor, "--num-samples", trials, "--max-epochs", epochs)
            row["wall"].append(wall), row["acc"].append(figures["best_val_accuracy"])
    return _compare(rows, trials, epochs)


def part_tiny200(cfg: argparse.Namespace, root: Path) -> dict:
    trials = "24" if cfg.quick else "200"
    work = rb.fresh(root, "tiny200")
    rb.warm_store(work)
    rows: dict[str, dict[str, list]] = {e: {"wall": [], "acc": [], "store": [], "driver": []} for e in ("batched", "ray")}
    for _ in range(cfg.repeats):
        for executor, row in rows.items():
            wall, figures = _run(rb.SPACES / "reference.py", work, executor, "--num-samples", trials)
            row["wall"].append(wall), row["acc"].append(figures["best_val_accuracy"])
            row["store"].append(figures["store_process_cpu_s"]), row["driver"].append(figures["driver_cpu_s"])
    result = _compare(rows, trials, "3")
    for executor in ("batched", "ray"):
        result[executor]["trials_per_min"] = int(trials) / result[executor]["wall"] * 60
        # the MLflow store's process: its CPU per trial is the floor of a search's time per trial on 2 cores
        result[executor]["store_cpu_ms_per_trial"] = 1000 * rb.median(rows[executor]["store"]) / int(trials)
        result[executor]["driver_cpu_s"] = rb.median(rows[executor]["driver"])
    return result


OVERHEAD_SPACE = """from hpsearch import Search
# one configuration, about 2 s of training a trial on one thread (tune max_epochs to this machine's speed)
search = Search(data="sklearn:digits", params={{"layers": [128, 128], "batch_size": 32, "optimizer": "adam"}},
                scheduler="fifo", num_samples=48, max_epochs={epochs})
"""


def part_overhead(cfg: argparse.Namespace, root: Path) -> dict:
    trials = "8" if cfg.quick else "48"
    work = rb.fresh(root, "overhead")
    rb.warm_store(work)
    space = work / "overhead.py"
    space.write_text(OVERHEAD_SPACE.format(epochs=cfg.overhead_epochs))
    result = {}
    for executor in ("ray", "local", "batched"):
        walls, starts, ideals = [], [], []
        for _ in range(cfg.repeats):
            start_wall, _ = _run(space, work, executor, "--num-samples", "1", "--max-epochs", "1")
            wall, figures = _run(space, work, executor, "--num-samples", trials)
            slots = min(os.cpu_count() or 1, int(trials)) if executor == "ray" else 1
            walls.append(wall), starts.append(start_wall), ideals.append(rb.ideal_seconds(figures["trials"]) / slots)
        per_trial = [(w - s - i) / int(trials) for w, s, i in zip(walls, starts, ideals, strict=True)]
        result[executor] = {"wall": rb.median(walls), "start_up": rb.median(starts), "ideal": rb.median(ideals),
                            "overhead_per_trial_s": rb.median(per_trial), "trials": int(trials)}
    return result


_MLFLOW_COUNT = """
import collections, json, sys, time
from pathlib import Path
import mlflow
from hpsearch.execution.progress import QUIET, Progress
from hpsearch.execution.search import run_search
from hpsearch.space import load_space
calls, seconds = collections.Counter(), collections.Counter()
for name in ("create_run", "log_batch", "log_artifact", "log_artifacts", "log_text", "set_terminated", "set_tag",
             "log_metric", "log_param", "update_run", "search_runs", "get_run", "create_experiment"):
    real = getattr(mlflow.MlflowClient, name)
    def timed(self, *a, _real=real, _name=name, **k):
        start = time.perf_counter()
        try:
            return _real(self, *a, **k)
        finally:
            calls[_name] += 1
            seconds[_name] += time.perf_counter() - start
    setattr(mlflow.MlflowClient, name, timed)
space = Path(sys.argv[1])
search = load_space(space).replace(num_samples=int(sys.argv[2]))
outcome = run_search(search, space, executor="batched", plots=False, progress=Progress(QUIET, live=False))
print(json.dumps({"trials": len(outcome.trials), "calls": dict(calls), "seconds": dict(seconds)}))
"""


def part_mlflow(cfg: argparse.Namespace, root: Path) -> dict:
    """Every MLflow client call of a batched search (in-process store), per trial: what a trial's run costs."""
    trials = "16" if cfg.quick else "64"
    work = rb.fresh(root, "mlflow")
    rb.warm_store(work)
    _, out = rb.timed([sys.executable, "-c", _MLFLOW_COUNT, str(rb.SPACES / "reference.py"), trials], work)
    figures = json.loads(out.strip().splitlines()[-1])
    n = figures["trials"]
    return {"trials": n, "calls_per_trial": {k: v / n for k, v in figures["calls"].items()},
            "ms_per_trial": {k: 1000 * v / n for k, v in figures["seconds"].items()},
            "total_ms_per_trial": 1000 * sum(figures["seconds"].values()) / n}


def _compare(rows: dict[str, dict[str, list]], trials: str, epochs: str) -> dict:
    result = {"trials": trials, "epochs": epochs}
    for executor, row in rows.items():
        accs = [a for a in row["acc"] if a is not None]
        result[executor] = {"wall": rb.median(row["wall"]), "walls": row["wall"], "best_val_accuracy": rb.median(accs),
                            "accs": accs}
    result["batched_over_ray"] = result["batched"]["wall"] / result["ray"]["wall"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="one repeat and small searches (a smoke run)")
    parser.add_argument("--overhead-epochs", type=int, default=60, help="epochs of an overhead trial (about 2 s)")
    parser.add_argument("--json", type=Path, help="also save the raw figures here")
    cfg = parser.parse_args()
    cfg.repeats = cfg.repeats or (1 if cfg.quick else 3)
    parts = [p for p in cfg.only.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {sorted(set(parts) - set(PARTS))}; the parts are {', '.join(PARTS)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="hpsearch-bench-batched-") as root:
        for part in parts:
            print(f"-- {part}", file=sys.stderr, flush=True)
            results[part] = globals()[f"part_{part}"](cfg, Path(root))
            print(json.dumps(results[part], default=str), flush=True)
    if cfg.json:
        cfg.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

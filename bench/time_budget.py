"""How far a search runs past its time budget, on every executor: the overrun a user sees.

    python bench/time_budget.py [--budget SECONDS] [--repeats N] [--executors local,batched,ray] [--plots]

Runs ``python -m hpsearch run SPACE --time-budget B`` as a user runs it (a process each, in a folder of its own)
on a search far longer than B (50 trials of up to 300 epochs, an epoch about 0.3 s on 2 cores), the executors
interleaved. For each run it prints the budget, the command's wall time and its overrun (wall time minus budget),
split into what the budget's clock does not count (the interpreter's start and the imports before it, and the
exit after the summary), the trials' overrun (from the budget's end to the trials' end: at most an epoch of the
slowest running trial, and the closing of the stopped trials' runs) and the search's end (test, figures,
publishing, Ray's shutdown; from the command's own clock, whole seconds); and the longest epoch any trial trained.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACE = """
from sklearn.datasets import make_classification
from hpsearch import Search, layers, loguniform

def make_data():
    return make_classification(n_samples=3000, n_features=20, random_state=0)

search = Search(data=make_data, params={"layers": layers(1, 2, units=(8, 32)), "lr": loguniform(1e-3, 1e-2),
                "batch_size": 16}, num_samples=50, max_epochs=300, scheduler="fifo", experiment="budget")
"""


def run_once(executor: str, budget: float, plots: bool) -> dict[str, float]:
    """One search in a new folder; its figures, read back from the command's output and MLflow."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="hpsearch-budget-"))
    (folder / "space.py").write_text(SPACE)
    argv = [sys.executable, "-m", "hpsearch", "run", "space.py", "--executor", executor,
            "--time-budget", str(budget), *([] if plots else ["--no-plots"])]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{executor}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("budget").experiment_id
    [parent] = client.search_runs([experiment], "tags.`hpsearch.kind` = 'search'")
    trials = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    used = parent.data.metrics["time_budget_used_s"]  # from the budget's clock start to the trials' end
    shown = _seconds(re.search(r"search finished in (\S+):", done.stdout).group(1))  # the same clock, at the summary
    return {"wall": wall, "overrun": wall - budget, "outside_clock": wall - shown, "trials_overrun": used - budget,
            "search_end": shown - used, "longest_epoch": _longest_epoch(client, trials), "trials": len(trials)}


def _seconds(shown: str) -> float:
    """``1m08s`` (hpsearch's format_duration) as seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", shown)
    hours, minutes, seconds = (int(p) if p else 0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def _longest_epoch(client, trials) -> float:  # noqa: ANN001 - MLflow's client and runs
    """The longest time between two epochs of a trial (MLflow's timestamps: when each epoch ended)."""
    longest = 0.0
    for trial in trials:
        stamps = sorted(m.timestamp for m in client.get_metric_history(trial.info.run_id, "val_loss"))
        longest = max([longest, *((b - a) / 1000 for a, b in zip(stamps, stamps[1:], strict=False))])
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--executors", default="local,batched,ray")
    parser.add_argument("--plots", action="store_true", help="draw and log the figures (off by default)")
    args = parser.parse_args()
    executors = args.executors.split(",")
    results: dict[str, list[dict[str, float]]] = {e: [] for e in executors}
    for _ in range(args.repeats):  # interleaved: the machine's load falls on every executor alike
        for executor in executors:
            results[executor].append(run_once(executor, args.budget, args.plots))
    print(f"budget {args.budget:g} s, {args.repeats} runs each, medians (seconds)")
    print("| executor | wall | overrun | outside its clock | trials' overrun | search's end | longest epoch | trials |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for executor, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"| {executor} | {med['wall']:.1f} | {med['overrun']:.1f} | {med['outside_clock']:.1f} | "
              f"{med['trials_overrun']:.2f} | {med['search_end']:.1f} | {med['longest_epoch']:.2f} | "
              f"{med['trials']:.0f} |")


if __name__ == "__main__":
    main()

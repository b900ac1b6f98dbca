"""Big tables: a search's peak memory and ``hpsearch predict``'s time and memory on a mixed CSV of 100k and 1M rows.

    PYTHONPATH=. python bench/big_table.py                    # 100k and 1M rows, into a temporary folder
    PYTHONPATH=. python bench/big_table.py --rows 100000 --keep /tmp/big
    PYTHONPATH=. python bench/big_table.py --base /tmp/main    # each size: another checkout, then this one

The table is generated (seeded) as users' tables are: 16 numeric columns with missing values, 3 text columns
(one of 300 values), an integer column and a text target; 1M rows is about 157 MB of CSV. Each command runs as a
user runs it (its own process, imports included). Memory is the peak of the sum of the proportional set sizes
(PSS, ``/proc/PID/smaps_rollup``) of the command's process and every process it starts, sampled every 50 ms: PSS
counts a page shared between a process and its forks once, where RSS would count it in each.
The floor is ``pd.read_csv`` of the same file, timed in its own process. With ``--base PATH`` each size is run
with that checkout of hpsearch first (its own store), then with this one, on the same file: side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
NUMERIC = 16
SPACE = """from hpsearch import Search, choice, layers, loguniform
search = Search(data="csv:big.csv", target="label", experiment="big", num_samples=4, max_epochs=2,
                params={"layers": layers(1, 2, units=(16, 64)), "lr": loguniform(1e-3, 1e-2)})
"""


def make_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """The mixed table: numbers with gaps, text of few and of 300 values, an integer column, a text target."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for i in range(NUMERIC):
        values = rng.normal(size=rows) * (i + 1) + (rng.lognormal(size=rows) if i % 4 == 0 else 0)
        values[rng.random(rows) < 0.05] = np.nan
        columns[f"x{i}"] = np.round(values, 4)
    columns["region"] = rng.choice(["north", "south", "east", "west", "centre"], rows)
    columns["product"] = rng.choice([f"product_{i:03d}" for i in range(300)], rows)
    columns["channel"] = rng.choice(["web", "shop", "phone", None], rows, p=[0.5, 0.3, 0.15, 0.05])
    columns["quantity"] = rng.integers(0, 1000, rows)
    score = np.nan_to_num(columns["x0"]) + 0.5 * np.nan_to_num(columns["x3"]) + (columns["region"] == "north")
    columns["label"] = np.where(score > np.median(score), "high", "low")
    return pd.DataFrame(columns)


class PeakMemory:
    """Samples the PSS of a process and its descendants until stopped; ``peak`` is the largest sum, in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_pss(pid) for pid in _tree(self.pid)))
            time.sleep(0.05)


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(p) for p in task.read_text().split()]
    return pids


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd: list[str], cwd: Path, repo: Path = REPO) -> tuple[float, int]:
    """Wall seconds and peak memory (bytes) of one command as its own process, with hpsearch imported from
    ``repo``; fails loudly if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    _, stderr = process.communicate()
    wall, peak = time.perf_counter() - start, memory.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({process.returncode}):\n{stderr[-3000:]}")
    return wall, peak


def bench(rows: int, folder: Path, repo: Path = REPO) -> dict[str, float]:
    """The figures of one size with hpsearch from ``repo``: the table is shared, the store is the run's own."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "big.csv"
    if not csv.exists():
        make_table(rows).to_csv(csv, index=False)
    work = folder / ("run-" + repo.name)
    work.mkdir(exist_ok=True)
    (work / "space.py").write_text(SPACE.replace("csv:big.csv", f"csv:{csv}"))
    size = csv.stat().st_size
    python = sys.executable
    read_s, read_peak = measure([python, "-c", f"import pandas as pd; pd.read_csv({str(csv)!r})"], work, repo)
    search_s, search_peak = measure([python, "-m", "hpsearch", "run", "space.py", "--executor", "local",
                                     "--no-plots", "-q"], work, repo)
    predict_s, predict_peak = measure([python, "-m", "hpsearch", "predict", "models:/big@best", str(csv),
                                       "-o", "predictions.csv"], work, repo)
    return {"rows": rows, "file_mb": size / 1e6, "read_csv_s": read_s, "read_csv_peak_mb": read_peak / 1e6,
            "search_s": search_s, "search_peak_mb": search_peak / 1e6, "search_peak_x_file": search_peak / size,
            "predict_s": predict_s, "predict_x_read_csv": predict_s / read_s, "predict_peak_mb": predict_peak / 1e6,
            "predict_peak_x_file": predict_peak / size, "predict_rows_per_s": rows / predict_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated table sizes")
    parser.add_argument("--keep", type=Path, help="a folder to keep the tables and the store in")
    parser.add_argument("--base", type=Path, help="another checkout of hpsearch, run first on each size")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="hpsearch-big-"))
    repos = [("base", args.base.resolve()), ("this", REPO)] if args.base else [("this", REPO)]
    print("| rows | code | CSV MB | read_csv s | search s | search peak MB (x file) | predict s (x read_csv) "
          "| predict peak MB (x file) | predict rows/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows in (int(r) for r in args.rows.split(",")):
        for name, repo in repos:
            r = bench(rows, root / f"rows{rows}", repo)
            print(f"| {rows:,} | {name} | {r['file_mb']:.0f} | {r['read_csv_s']:.2f} | {r['search_s']:.1f} | "
                  f"{r['search_peak_mb']:.0f} ({r['search_peak_x_file']:.1f}x) | {r['predict_s']:.1f} "
                  f"({r['predict_x_read_csv']:.1f}x) | {r['predict_peak_mb']:.0f} ({r['predict_peak_x_file']:.1f}x) | "
                  f"{r['predict_rows_per_s']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()

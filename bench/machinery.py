"""Issue 18, item 4: the home-made machinery (MLflow in a forked process of its own, figures drawn in a forked
drawer) against the simple design (MLflow in the driver with its own asynchronous logging, figures drawn in the
driver), side by side.

The two designs are two commits: 897f281 (with the machinery) and c7b8ba6 (the same code with it removed), so the
figures differ by the machinery alone. Run it from a checkout of the simple one:

    git worktree add --detach /tmp/premach 897f281      # the machinery
    git worktree add --detach /tmp/postmach c7b8ba6     # the simple design
    cd /tmp/postmach && PYTHONPATH=. python bench/machinery.py --base /tmp/premach --repeats 3

Each run is ``python -m hpsearch run SPACE -q`` as a user runs it (imports and start-up included), with
``PYTHONPATH`` pointing at one tree or the other, in a folder of its own per design whose MLflow store was created
before timing. The two designs run in interleaved pairs whose order alternates (A B, B A, ...), so drift of a
shared machine falls on both; each figure is the median, with the spread (min-max), the median of the paired
differences, and the 1-minute load average seen before each run.
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

REPO = Path(__file__).resolve().parents[1]
SEARCHES = {  # as docs/benchmarks.md's parts: tiny (in-process, the default executor) and medium (Ray Tune)
    "tiny": ["reference.py"],
    "medium": ["digits.py", "--num-samples", "24", "--max-epochs", "20", "--executor", "ray"],
}


def run(tree: Path, workdir: Path, search: list[str]) -> tuple[float, float]:
    """Wall seconds of one search as a user runs it, and the load average before it."""
    load = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "hpsearch", "run", str(REPO / "search_spaces" / search[0]), *search[1:], "-q"]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                            text=True, timeout=1800)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} ({tree}) failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return wall, load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("/tmp/mach_base"),
                        help="a checkout of the commit with the machinery (default /tmp/mach_base)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs per search (default 5)")
    parser.add_argument("--searches", default="tiny,medium", help="comma-separated, of: tiny, medium")
    parser.add_argument("--json", type=Path, help="save every run here (rewritten after each pair)")
    parser.add_argument("--table", type=Path, help="print the table of a saved --json file and exit")
    cfg = parser.parse_args()
    if cfg.table:
        print(table(json.loads(cfg.table.read_text())))
        return 0
    arms = {"machinery (forked store + drawer)": cfg.base.resolve(), "simple (in the driver)": REPO}
    searches = [s for s in cfg.searches.split(",") if s]
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {s: {a: [] for a in arms} for s in searches}
    with tempfile.TemporaryDirectory(prefix="hpsearch-machinery-") as root:
        folders = {arm: Path(root) / f"arm{i}" for i, arm in enumerate(arms)}
        for arm, folder in folders.items():  # the store created once per folder, not timed
            folder.mkdir()
            run(arms[arm], folder, ["reference.py", "--num-samples", "1", "--max-epochs", "1",
                                    "--experiment", "warm-up"])
        for repeat in range(cfg.repeats):
            for search in searches:
                order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
                for arm in order:
                    runs[search][arm].append(run(arms[arm], folders[arm], SEARCHES[search]))
                    print(f"{search} {arm}: {runs[search][arm][-1][0]:.1f} s (load {runs[search][arm][-1][1]:.1f})",
                          file=sys.stderr, flush=True)
                if cfg.json:
                    cfg.json.write_text(json.dumps(runs, indent=1))
    print(table(runs))
    return 0


def table(runs: dict[str, dict[str, list[tuple[float, float]]]]) -> str:
    lines = ["| search | design | wall s, median | min-max | every run | load before runs (min-max) |",
             "|---|---|---|---|---|---|"]
    notes = []
    for search, arms in runs.items():
        for arm, rows in arms.items():
            walls, loads = [w for w, _ in rows], [load for _, load in rows]
            lines.append(f"| {search} | {arm} | {statistics.median(walls):.1f} | {min(walls):.1f}-{max(walls):.1f} | "
                         f"{', '.join(f'{w:.1f}' for w in walls)} | {min(loads):.1f}-{max(loads):.1f} |")
        base, simple = ([w for w, _ in rows] for rows in arms.values())
        diffs = [b - s for b, s in zip(base, simple, strict=False)]  # whole pairs only
        gain = statistics.median(base) - statistics.median(simple)
        notes.append(f"{search}: the machinery's gain = simple - machinery = {-gain:+.1f} s on the medians "
                     f"({-100 * gain / statistics.median(base):+.1f} % of the machinery's wall); median of the paired "
                     f"differences {-statistics.median(diffs):+.1f} s, pairs {', '.join(f'{-d:+.1f}' for d in diffs)}")
    return "\n".join([*lines, "", *notes])


if __name__ == "__main__":
    sys.exit(main())

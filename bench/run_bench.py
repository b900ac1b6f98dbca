# ruff: noqa: E501 - the table rows read better on one line
"""The performance benchmark of issue 7: hpsearch against the two reference scripts and a plain Ray Tune search.

    PYTHONPATH=. python bench/run_bench.py --write          # full run (3 repeats, about 30 min on 2 quiet cores)
    PYTHONPATH=. python bench/run_bench.py --quick          # smoke run: one repeat, smaller searches
    PYTHONPATH=. python bench/run_bench.py --parts tiny,loop --repeats 5

Parts: ``tiny`` (the reference search, 16 x 3: hpsearch from search_spaces/reference.py with full MLflow
tracking, auto executor and Ray executor, vs ../shared/reference/ray_tune_recipe.py and optuna_inprocess.py),
``medium`` (digits, 24 x 20: hpsearch vs bench/ray_tune_digits.py, and the framework overhead), ``loop``
(bench/loop.py), ``tracking`` (MLflow on vs off), ``memory`` (a 200-trial tiny search's driver memory),
``levers`` (the Ray executor's optimisations undone one at a time), ``scripts``, ``startup`` and ``runcost`` (against
the hand-written Optuna scripts, and a trial's MLflow run: bench/hand_written.py). Every command runs as its own process
(imports and start-up included, as a user sees them) in a fresh folder; runs of one part are interleaved and
each figure is the median over ``--repeats``. ``--write`` puts the tables into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("HPSEARCH_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
SPACES = REPO / "search_spaces"
SEARCH = REPO / "bench" / "_search.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
PARTS = ("tiny", "medium", "tracking", "memory", "loop", "levers", "scripts", "startup", "runcost")
HAND_WRITTEN = ("scripts", "startup", "runcost")  # parts of bench/hand_written.py


CPU: list[float] = []  # CPU seconds (user + sys) of each command's process, in the order they ran


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path, timeout: int = 1800, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of one command (its own process) and its stdout; fails loudly if it fails.

    The command's CPU time goes to ``CPU``: steadier than wall time on a busy machine, but it leaves out the
    Ray worker processes that a command does not wait for.
    """
    start, cpu = time.perf_counter(), _children_cpu()
    result = subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    CPU.append(_children_cpu() - cpu)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return wall, result.stdout


def hpsearch(space: Path, workdir: Path, *options: str) -> tuple[float, dict]:
    """One `hpsearch run` (through bench/_search.py) in ``workdir``: wall seconds and its figures."""
    out = workdir / f"result-{time.monotonic_ns()}.json"
    wall, _ = timed([sys.executable, str(SEARCH), str(out), str(space), *options], workdir)
    return wall, json.loads(out.read_text())


def reference(script: Path, workdir: Path, *args: str) -> tuple[float, float | None, int]:
    """A reference-style script: wall seconds, the best value it prints, and its number of trials."""
    wall, out = timed([sys.executable, str(script), *args], workdir)
    found = re.search(r"best .* (\S+) trials (\d+) wall", out)
    return wall, script_best(out), int(found.group(2)) if found else 0


def script_best(stdout: str) -> float | None:
    """The best value a reference script prints on its last line (``best NAME VALUE trials N wall S``)."""
    found = re.search(r"best .* (\S+) trials (\d+) wall", stdout)
    return float(found.group(1)) if found else None


def fresh(root: Path, name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    return path


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def warm_store(workdir: Path) -> float:
    """Create the MLflow store once (work done once per project folder), timed: its cost is reported apart."""
    wall, _ = hpsearch(SPACES / "reference.py", workdir, "--num-samples", "1", "--max-epochs", "1",
                       "--experiment", "warm-up")
    return wall


# ------------------------------------------------------------------------------------------------------ parts
def part_tiny(cfg: argparse.Namespace, root: Path) -> dict:
    trials, epochs = "16", "3"
    work = fresh(root, "tiny")
    cold = warm_store(work)
    rows: dict[str, dict[str, list]] = {k: {"wall": [], "best": [], "trials": [], "cpu": []} for k in
                                        ("hpsearch (auto: batched)", "hpsearch --executor ray",
                                         "ray_tune_recipe.py", "optuna_inprocess.py")}
    for _ in range(cfg.repeats):
        for name, run in rows.items():
            if name.startswith("hpsearch"):
                extra = ["--executor", "ray"] if "ray" in name else []
                wall, figures = hpsearch(SPACES / "reference.py", work, *extra)
                best, n = figures["best"], len(figures["trials"])
            else:
                wall, best, n = reference(REFERENCE / name, work, trials, epochs, *(
                    [str(work / "ray_results")] if "ray" in name else []))
            run["wall"].append(wall), run["best"].append(best), run["trials"].append(n), run["cpu"].append(CPU[-1])
    result = {name: {"wall": median(r["wall"]), "walls": r["wall"], "best": median([b for b in r["best"] if b is not None]),
                     "trials": max(r["trials"]), "cpu": median(r["cpu"])} for name, r in rows.items()}
    result["cold_store_first_run_s"] = cold
    return result


def part_medium(cfg: argparse.Namespace, root: Path) -> dict:
    trials, epochs = ("8", "5") if cfg.quick else ("24", "20")
    work = fresh(root, "medium")
    warm_store(work)
    hp: dict[str, list] = {"wall": [], "best": [], "acc": [], "ideal": [], "search": [], "tracking": []}
    plain: dict[str, list] = {"wall": [], "best": []}
    local: dict[str, list] = {"wall": [], "best": [], "ideal": []}
    for _ in range(cfg.repeats):
        wall, figures = hpsearch(SPACES / "digits.py", work, "--num-samples", trials, "--max-epochs", epochs,
                                 "--executor", "ray")
        hp["wall"].append(wall), hp["best"].append(figures["best"]), hp["acc"].append(figures["best_val_accuracy"])
        hp["search"].append(figures["search_wall_s"]), hp["tracking"].append(figures["tracking_s"])
        hp["ideal"].append(ideal_seconds(figures["trials"]) / min(os.cpu_count() or 1, int(trials)))
        wall, best, _ = reference(REPO / "bench" / "ray_tune_digits.py", work, trials, epochs,
                                  str(work / "ray_results"))
        plain["wall"].append(wall), plain["best"].append(best)
        wall, figures = hpsearch(SPACES / "digits.py", work, "--num-samples", trials, "--max-epochs", epochs,
                                 "--executor", "local")
        local["wall"].append(wall), local["best"].append(figures["best"])
        local["ideal"].append(ideal_seconds(figures["trials"]))  # one slot: trials run one after another
    overhead = [(w - i) / w for w, i in zip(hp["wall"], hp["ideal"], strict=True)]
    return {"trials": trials, "epochs": epochs, "hpsearch_wall": median(hp["wall"]), "hpsearch_walls": hp["wall"],
            "hpsearch_best": median(hp["best"]), "hpsearch_best_acc": median(hp["acc"]),
            "ideal": median(hp["ideal"]), "overhead_frac": median(overhead),
            "inside_run_search": median(hp["search"]), "tracking_s": median(hp["tracking"]),
            "plain_wall": median(plain["wall"]), "plain_walls": plain["wall"], "plain_best": median(plain["best"]),
            "slots": min(os.cpu_count() or 1, int(trials)),
            "local_wall": median(local["wall"]), "local_walls": local["wall"], "local_best": median(local["best"]),
            "local_overhead_frac": median([(w - i) / w for w, i in zip(local["wall"], local["ideal"], strict=True)])}


def ideal_seconds(trials: list[dict]) -> float:
    """The trials' pure training time: each trial's config trained again for its epochs, alone, on one thread."""
    cmd = [sys.executable, "-c", _IDEAL, json.dumps(trials)]
    _, out = timed(cmd, REPO)
    return float(out.strip().splitlines()[-1])


_IDEAL = """
import json, sys, time, torch
from hpsearch.data.sources import load_dataset
from hpsearch.space import load_space
from hpsearch.training.fit import TrialConfig, fit
torch.set_num_threads(1)
search = load_space("search_spaces/digits.py")
data = load_dataset(search, __import__("pathlib").Path("search_spaces/digits.py")).for_trials()
fit(TrialConfig(hidden_sizes=(32,), max_epochs=1), data, lambda m, s: None)  # warm-up
total = 0.0
for trial in json.loads(sys.argv[1]):
    if trial["epochs"] == 0:
        continue
    params = {k: v for k, v in trial["params"].items() if k not in ("max_epochs",)}
    config = TrialConfig.from_params(params, max_epochs=trial["epochs"])
    config = TrialConfig(**{**config.__dict__, "lr": float(config.lr), "dropout": float(config.dropout),
        "weight_decay": float(config.weight_decay), "batch_size": int(config.batch_size),
        "momentum": float(config.momentum), "seed": int(config.seed), "early_stopping_patience": None})
    start = time.perf_counter()
    fit(config, data, lambda m, s: None)
    total += time.perf_counter() - start
print(total)
"""


def part_loop(cfg: argparse.Namespace, root: Path) -> dict:
    repeats = str(max(cfg.repeats, 3))
    variants = {"baseline": [], "threads=2": ["--threads", "2"], "eval batch 64": ["--eval-batch", "64"]}
    if cfg.quick:
        variants = {"baseline": []}
    result = {}
    for name, extra in variants.items():
        epochs = ["--epochs-digits", "3", "--epochs-table", "1"] if cfg.quick else []
        _, out = timed([sys.executable, str(REPO / "bench" / "loop.py"), "--repeats", repeats, *epochs, *extra], REPO)
        result[name] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return result


def part_tracking(cfg: argparse.Namespace, root: Path) -> dict:
    trials, epochs = ("8", "5") if cfg.quick else ("24", "20")
    work = fresh(root, "tracking")
    warm_store(work)
    runs = {"medium on": [], "medium off": [], "tiny on": [], "tiny off": []}
    figures: dict[str, list] = {"medium on": [], "tiny on": []}
    for _ in range(cfg.repeats):
        for name in runs:
            space = SPACES / ("digits.py" if name.startswith("medium") else "reference.py")
            extra = ["--num-samples", trials, "--max-epochs", epochs, "--executor", "ray"] if "medium" in name else []
            # The end-of-search figures read MLflow back: off in both arms, so the arms differ by tracking alone.
            wall, data = hpsearch(space, work, *extra, "--no-plots",
                                  *(["--no-tracking"] if name.endswith("off") else []))
            runs[name].append(wall)
            if name.endswith("on"):
                figures[name].append(data)
    result = {}
    for size in ("medium", "tiny"):
        on, off = median(runs[f"{size} on"]), median(runs[f"{size} off"])
        client = median([f["tracking_s"] for f in figures[f"{size} on"]])
        n = len(figures[f"{size} on"][0]["trials"])
        result[size] = {"on": on, "off": off, "ons": runs[f"{size} on"], "offs": runs[f"{size} off"],
                        "client_s": client, "trials": n, "calls": figures[f"{size} on"][0]["tracking_calls"],
                        "connect_s": median([f.get("connect_s", 0.0) for f in figures[f"{size} on"]]),
                        "publish_s": median([f.get("publish_s", 0.0) for f in figures[f"{size} on"]]),
                        "store_cpu_s": median([f.get("store_process_cpu_s", 0.0) for f in figures[f"{size} on"]])}
    return result


def part_memory(cfg: argparse.Namespace, root: Path) -> dict:
    trials = "40" if cfg.quick else "200"
    result = {}
    for executor in ("ray", "local"):
        work = fresh(root, f"memory-{executor}")
        wall, figures = hpsearch(SPACES / "reference.py", work, "--num-samples", trials, "--executor", executor)
        samples = figures["rss_after_trials_mb"]
        marks = {f"after {int(len(samples) * q)} trials": samples[int(len(samples) * q) - 1] for q in (0.25, 0.5, 1.0)}
        result[executor] = {"wall": wall, "trials": trials, "peak_rss_mb": figures["peak_rss_mb"], **marks}
    return result


def part_levers(cfg: argparse.Namespace, root: Path) -> dict:
    trials, epochs = ("8", "5") if cfg.quick else ("24", "20")
    work = fresh(root, "levers")
    warm_store(work)
    variants = {"as shipped": [], "Tune's loggers on": ["--lever", "tune-loggers-on"],
                "no actor reuse": ["--lever", "no-reuse-actors"],
                "no limit on trials at once (Tune's default: one pending trial)": ["--lever", "no-concurrency-limit"],
                "trial workers import the driver's modules (MLflow, scikit-learn, pandas)":
                    ["--lever", "heavy-worker-imports"],
                "checkpoints: keep 4 per trial (a forced snapshot every 4th checkpoint)": ["--lever", "checkpoint-keep-4"],
                "checkpoints: keep all (no forced snapshot)": ["--lever", "checkpoint-keep-all"],
                "Ray prestarts a worker per CPU for the driver (unused by Tune's actors)": ["--lever", "prestart-workers"],
                "Tune's callback usage tag (imports MLflow into the driver)": ["--lever", "tune-usage-tag"],
                "RMSprop through torch.optim.RMSprop (imports torch._dynamo in each worker)":
                    ["--lever", "rmsprop-torch-optim"]}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(cfg.repeats):
        for name, extra in variants.items():
            wall, figures = hpsearch(SPACES / "digits.py", work, "--num-samples", trials, "--max-epochs", epochs,
                                     "--executor", "ray", *extra)
            walls[name].append(wall)
            peaks[name].append(figures["peak_rss_mb"])
    return {name: {"wall": median(w), "walls": w, "peak_rss_mb": median(peaks[name])} for name, w in walls.items()}


# ---------------------------------------------------------------------------------------------------- report
def render(results: dict, meta: dict[str, str]) -> str:
    lines = [f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}. Median shown, "
             "every run in brackets. When each part was measured: " + "; ".join(f"{p} {meta[p]}" for p in results) + ".",
             "Regenerate: `PYTHONPATH=. python bench/run_bench.py --write` (a run of some `--parts` keeps the others, "
             "from docs/benchmarks.json).", ""]
    f = lambda x, d=1: "n/a" if x is None or x != x else f"{x:.{d}f}"  # noqa: E731
    runs = lambda xs: "[" + ", ".join(f(x) for x in xs) + "]"  # noqa: E731
    if "tiny" in results:
        t = results["tiny"]
        ray_s, optuna_s = t["ray_tune_recipe.py"]["wall"], t["optuna_inprocess.py"]["wall"]
        lines += ["## tiny: the reference search, 16 trials x 3 epochs", "",
                  "| command | wall s | trials/min | best value | x Ray script | x Optuna | CPU s of the command's process |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in t.items():
            if name == "cold_store_first_run_s":
                continue
            lines.append(f"| {name} | {f(r['wall'])} {runs(r['walls'])} | {f(r['trials'] / r['wall'] * 60)} | "
                         f"{f(r['best'], 4)} | {f(r['wall'] / ray_s, 2)} | {f(r['wall'] / optuna_s, 2)} | {f(r.get('cpu'))} |")
        lines += ["", "hpsearch's best value is the best trial's validation loss (BCE); the reference scripts print "
                  "the last training-batch loss of their best trial. The MLflow store was created before timing; "
                  f"a first run in a new folder (store creation included, 1 trial) took {f(t['cold_store_first_run_s'])} s. "
                  "The CPU column leaves out Ray's worker processes (not children the command waits for): compare it "
                  "only between in-process commands, where it is a steadier figure than the wall time on a busy machine.",
                  ""]
    if "medium" in results:
        m = results["medium"]
        lines += [f"## medium: digits, up to 3 hidden layers, {m['trials']} trials x {m['epochs']} epochs", "",
                  "| command | wall s | trials/min | best val_loss |", "|---|---|---|---|",
                  f"| hpsearch (Ray executor, full MLflow tracking) | {f(m['hpsearch_wall'])} {runs(m['hpsearch_walls'])} | "
                  f"{f(int(m['trials']) / m['hpsearch_wall'] * 60)} | {f(m['hpsearch_best'], 4)} (accuracy {f(m['hpsearch_best_acc'], 3)}) |",
                  f"| bench/ray_tune_digits.py (plain Ray Tune) | {f(m['plain_wall'])} {runs(m['plain_walls'])} | "
                  f"{f(int(m['trials']) / m['plain_wall'] * 60)} | {f(m['plain_best'], 4)} |",
                  f"| hpsearch --executor local (in-process, 1 slot) | {f(m['local_wall'])} {runs(m['local_walls'])} | "
                  f"{f(int(m['trials']) / m['local_wall'] * 60)} | {f(m['local_best'], 4)} |", "",
                  f"Framework overhead of hpsearch: wall {f(m['hpsearch_wall'])} s - ideal {f(m['ideal'])} s "
                  f"(the trials' training alone, re-run one by one, divided by {m['slots']} slots) = "
                  f"**{f(100 * m['overhead_frac'])} %** of the wall time (target <= 5 %). Of the wall time, "
                  f"{f(m['inside_run_search'])} s were inside `run_search` (after imports), "
                  f"{f(m['tracking_s'])} s waiting on tracking calls. The same overhead for `--executor local` (ideal = the "
                  f"training time itself, one slot): {f(100 * m['local_overhead_frac'])} %.", ""]
    if "loop" in results:
        lines += ["## training loop: `hpsearch.training.fit.fit` vs a DataLoader loop", "",
                  "Same MLP (256-128 hidden, `build_model`), Adam 1e-3, batch 64, validation after every epoch, "
                  "samples/s = training rows x epochs / time, median; accuracy = final validation accuracy, mean "
                  "over the seeds.", "",
                  "| variant | data | rows x epochs | fit samples/s | DataLoader samples/s | speed-up | fit acc | DataLoader acc |",
                  "|---|---|---|---|---|---|---|---|"]
        for variant, rows in results["loop"].items():
            for r in rows:
                lines.append(f"| {variant} | {r['data']} | {r['rows']} x {r['epochs']} | {f(r['fit_samples_s'], 0)} | "
                             f"{f(r['dataloader_samples_s'], 0)} | {f(r['fit_samples_s'] / r['dataloader_samples_s'], 2)} | "
                             f"{f(r['fit_accuracy'], 4)} | {f(r['dataloader_accuracy'], 4)} |")
        lines.append("")
    if "tracking" in results:
        lines += ["## tracking: MLflow on vs off", "",
                  "| search | trials | wall on s | wall off s | driver waits on tracking calls s | per trial ms | "
                  "% of wall | waiting for the store to open s | publishing the best model s | store process CPU s | "
                  "on - off, % of wall on |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for size, r in results["tracking"].items():
            lines.append(f"| {size} | {r['trials']} | {f(r['on'])} {runs(r['ons'])} | {f(r['off'])} {runs(r['offs'])} | "
                         f"{f(r['client_s'], 2)} ({r['calls']} calls) | {f(1000 * r['client_s'] / r['trials'], 0)} | "
                         f"{f(100 * r['client_s'] / r['on'])} | {f(r.get('connect_s'), 2)} | {f(r.get('publish_s'), 2)} | "
                         f"{f(r.get('store_cpu_s'), 2)} | {f(100 * (r['on'] - r['off']) / r['on'])} |")
        lines += ["", "Off = a tracking store that does nothing (no MLflow, no store process, no best model "
                  "published). MLflow runs in a process of its own (`hpsearch.tracking.store`), forked before the driver "
                  "loads torch. The driver waits on the calls it needs an answer to (the experiment, the parent "
                  "run with its params and the space file, the end of the search) and, if the store has not "
                  "answered yet when a trial first reports, for that trial's run id (its run is opened without "
                  "a wait); a trial's per-epoch metrics and its end (model files, last metrics, status) are sent, "
                  "and cost the driver their hand-over only. Shown apart: the wait for the store to open (MLflow's "
                  "import and its SQL store, which the process does while the driver loads torch) and for the best "
                  "model's publishing (pyfunc packaging and the registry, issue 4). The store process's own "
                  "CPU time is what tracking costs the machine. Both arms run with `--no-plots` (the figures read "
                  "MLflow back), so they differ by tracking alone.", ""]
    if "memory" in results:
        lines += ["## memory: driver resident memory of a long tiny search", "", "| executor | trials | wall s | "
                  "RSS after 25 % | after 50 % | after 100 % | peak RSS MB |", "|---|---|---|---|---|---|---|"]
        for executor, r in results["memory"].items():
            marks = [v for k, v in r.items() if k.startswith("after")]
            lines.append(f"| {executor} | {r.get('trials', '')} | {f(r['wall'])} | "
                         + " | ".join(f(v) for v in marks) + f" | {f(r['peak_rss_mb'])} |")
        lines.append("")
    if "levers" in results:
        lines += ["## levers of the Ray executor (medium search), each undone alone", "",
                  "| variant | wall s | driver peak RSS MB |", "|---|---|---|"]
        for name, r in results["levers"].items():
            lines.append(f"| {name} | {f(r['wall'])} {runs(r['walls'])} | {f(r.get('peak_rss_mb', float('nan')))} |")
        lines.append("")
    if set(HAND_WRITTEN) & set(results):
        import hand_written

        lines += hand_written.render(results)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat and smaller searches (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3; 1 with --quick)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also save the raw figures here")
    parser.add_argument("--base", type=Path, help="scripts, startup: also run the hpsearch rows from this checkout")
    cfg = parser.parse_args()
    cfg.repeats = cfg.repeats or (1 if cfg.quick else 3)
    parts = [p for p in cfg.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; the parts are {', '.join(PARTS)}")
    results, meta = {}, {}
    saved = REPO / "docs" / "benchmarks.json"
    if cfg.write and saved.exists():  # parts not run this time keep their last figures
        previous = json.loads(saved.read_text())
        results, meta = previous["results"], previous["meta"]
    with tempfile.TemporaryDirectory(prefix="hpsearch-bench-") as root:
        for part in parts:  # tables written after every part: a long run stopped half-way keeps what it measured
            print(f"-- {part}", file=sys.stderr, flush=True)
            started, t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
            results[part] = _part(part)(cfg, Path(root))
            meta[part] = (f"{started} ({cfg.repeats} repeat(s), {(time.perf_counter() - t0) / 60:.1f} min"
                          + (", --quick" if cfg.quick else "") + ")")
            print(json.dumps(results[part], default=str)[:2000], file=sys.stderr, flush=True)
            results = {p: results[p] for p in PARTS if p in results}
            text = render(results, meta)
            if cfg.json:
                cfg.json.write_text(json.dumps(results, indent=1, default=str))
            if cfg.write:
                _write(text)
                saved.write_text(json.dumps({"results": results, "meta": meta}, indent=1, default=str))
    print(text)
    return 0


def _part(name: str):  # noqa: ANN202 - a part's function
    if name in HAND_WRITTEN:
        import hand_written

        return getattr(hand_written, f"part_{name}")
    return globals()[f"part_{name}"]


def _write(text: str) -> None:
    """Replace the generated section of docs/benchmarks.md, keeping the hand-written text around it."""
    path = REPO / "docs" / "benchmarks.md"
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    old = path.read_text() if path.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    head, _, rest = old.partition(begin)
    _, _, tail = rest.partition(end)
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())

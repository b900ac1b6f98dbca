"""What each training lever of the built-in network is worth on the real-table corpus (``bench/corpus.py``).

    PYTHONPATH=. python bench/model_levers.py run --out levers.jsonl [--tables mpg,fair] [--variants base,cosine]
    PYTHONPATH=. python bench/model_levers.py summary levers.jsonl [--base base]

``run`` trains single configurations (no search) with hpsearch's own data loading (a space file pointing at the
table's CSV, :func:`hpsearch.data.sources.load_dataset`: the split a search makes, seed 0) and its own trainer
(:class:`hpsearch.training.fit.Trainer`), for every table, variant and seed (``--seeds``: the trial's seed; the
split stays the same), and appends one JSON line per run to ``--out`` (a rerun skips the runs already there). Each
line holds the test metric (RMSE in the target's units, or accuracy) of the best validation epoch's model and of
the last epoch's, the best epoch, and the training time (one thread).

``summary`` prints, per variant, how it compares with ``--base`` on each part of the corpus (TUNE, HOLDOUT): the
geometric mean of the regression tables' test RMSE ratio to the base, the mean change of test accuracy, and the
count of tables where the variant is better or worse by more than the noise (twice the standard error of the
difference over the seeds). ``--tables-of VARIANT`` prints the per-table figures of one variant.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.corpus import CORPUS, HOLDOUT, TUNE, Table, write_csv  # noqa: E402
from hpsearch.data.sources import load_dataset  # noqa: E402
from hpsearch.space import load_space  # noqa: E402
from hpsearch.training.fit import Trainer, TrialConfig, evaluate  # noqa: E402

#: The configuration every variant changes one thing of: the hand-written network of
#: ``../shared/reference/mlp_by_hand.py`` (3 x 256 ReLU, dropout 0.1, AdamW 1e-3 with weight decay 1e-4,
#: batch 64, 20 epochs), as hpsearch trains it.
BASE = {"hidden_sizes": (256, 256, 256), "dropout": 0.1, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4,
        "batch_size": 64, "max_epochs": 20}

#: Each variant: the base with these values. A variant that does not apply to a table (a log target of a target
#: with values below 0, label smoothing of a regression) is skipped there.
VARIANTS: dict[str, dict] = {
    "base": {},
    "cosine": {"lr_schedule": "cosine"},
    "onecycle": {"lr_schedule": "onecycle"},
    "robust": {"numeric_encoding": "robust"},
    "quantile": {"numeric_encoding": "quantile"},
    "piecewise_linear": {"numeric_encoding": "piecewise_linear"},
    "periodic": {"numeric_embedding": "periodic"},
    "log1p": {"target_transform": "log1p"},
    "smoothing": {"label_smoothing": 0.1},
    "beta2": {"adam_beta2": 0.95},
    "adam": {"optimizer": "adam", "weight_decay": 0.0},
    "dropout0": {"dropout": 0.0},
    "width64": {"hidden_sizes": (64,)},
    "lr3e-3": {"lr": 3e-3},
    "onecycle_lr3e-3": {"lr_schedule": "onecycle", "lr": 3e-3},
    "cosine_lr3e-3": {"lr_schedule": "cosine", "lr": 3e-3},
    "lr1e-2": {"lr": 1e-2},
    "onecycle_lr1e-2": {"lr_schedule": "onecycle", "lr": 1e-2},
    "lr3e-3_ple": {"lr": 3e-3, "numeric_encoding": "piecewise_linear"},
    "lr3e-3_periodic": {"lr": 3e-3, "numeric_embedding": "periodic"},
    "onecycle_lr3e-3_ple": {"lr_schedule": "onecycle", "lr": 3e-3, "numeric_encoding": "piecewise_linear"},
    "onecycle_lr3e-3_periodic": {"lr_schedule": "onecycle", "lr": 3e-3, "numeric_embedding": "periodic"},
    "onecycle_periodic": {"lr_schedule": "onecycle", "numeric_embedding": "periodic"},
    "onecycle_ple": {"lr_schedule": "onecycle", "numeric_encoding": "piecewise_linear"},
    "onecycle_robust": {"lr_schedule": "onecycle", "numeric_encoding": "robust"},
    "onecycle_quantile": {"lr_schedule": "onecycle", "numeric_encoding": "quantile"},
    "cosine_ple": {"lr_schedule": "cosine", "numeric_encoding": "piecewise_linear"},
    "cosine_robust": {"lr_schedule": "cosine", "numeric_encoding": "robust"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train the variants, one JSON line per run")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--tables", help="comma-separated table names (default: the whole corpus)")
    run.add_argument("--variants", default="base", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    run.add_argument("--seeds", default="0,1,2")
    run.add_argument("--set", default="", help="extra values for every variant: name=value,name=value")
    summary = commands.add_parser("summary", help="compare the variants with the base")
    summary.add_argument("results", type=Path, nargs="+")
    summary.add_argument("--base", default="base")
    summary.add_argument("--tables-of", help="also the per-table figures of this variant")
    args = parser.parse_args()
    if args.command == "run":
        _run(args)
    else:
        _summary(args)


# ---------------------------------------------------------------------------------------------------- run
def _run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    tables = [t for t in CORPUS if not args.tables or t.name in args.tables.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    extra = dict(_value(item) for item in args.set.split(",") if item)
    done = _done(args.out)
    for table in tables:
        with tempfile.TemporaryDirectory(prefix=f"levers-{table.name}-") as folder:
            data = _load(table, Path(folder))
            for variant in variants:
                for seed in map(int, args.seeds.split(",")):
                    key = (table.name, variant + _suffix(extra), seed)
                    if key in done or not _applies(VARIANTS[variant], data):
                        continue
                    row = _train(data, {**BASE, **VARIANTS[variant], **extra, "seed": seed})
                    row.update(table=table.name, variant=key[1], seed=seed, task=data.task, rows=len(data.train))
                    with args.out.open("a") as out:
                        out.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)


def _value(item: str) -> tuple[str, object]:
    name, _, raw = item.partition("=")
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    return name, raw


def _suffix(extra: dict) -> str:
    return "".join(f"+{k}={v}" for k, v in sorted(extra.items()))


def _done(path: Path) -> set[tuple[str, str, int]]:
    if not path.is_file():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["table"], r["variant"], r["seed"]) for r in rows}


def _load(table: Table, folder: Path):  # noqa: ANN202 - a Dataset
    """The table as a search loads it: its CSV and a space file pointing at it."""
    write_csv(table.frame(), folder / "t.csv")
    space = folder / "space.py"
    space.write_text(f"from hpsearch import Search\nsearch = Search(data='csv:t.csv', target={table.target!r})\n")
    return load_dataset(load_space(space), space)


def _applies(variant: dict, data) -> bool:  # noqa: ANN001 - a Dataset
    if variant.get("target_transform", "none") != "none":
        units = data.train.y * data.target_std + data.target_mean
        return data.task == "regression" and float(units.min()) > -1
    if variant.get("label_smoothing"):
        return data.task != "regression"
    return True


def _train(data, values: dict) -> dict:  # noqa: ANN001 - a Dataset
    """One configuration trained for its epochs: test metrics at the best validation epoch and at the last."""
    key = "test_rmse" if data.task == "regression" else "test_accuracy"
    config = TrialConfig(**values)
    started = time.process_time()
    trainer = Trainer(config, data)
    curve = []
    while not trainer.done():
        curve.append(trainer.train_epoch()[config.metric])
    seconds = time.process_time() - started
    last = evaluate(trainer.model, data.test, trainer.spec, prefix="test_")[key]
    best = evaluate(trainer.best_model(), data.test, trainer.spec, prefix="test_")[key]
    return {"metric": key, "best": best, "last": last, "best_epoch": trainer.state["best_epoch"],
            "val_best": min(curve), "cpu_s": round(seconds, 2)}


# ------------------------------------------------------------------------------------------------ summary
def _summary(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for path in args.results for line in path.read_text().splitlines() if line.strip()]
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    for row in rows:
        runs.setdefault((row["table"], row["variant"]), {})[row["seed"]] = row
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    if "base" in variants:  # the base's own last epoch, as a variant
        for (table, variant), seeds in list(runs.items()):
            if variant == args.base:
                runs[(table, "last epoch")] = {s: {**r, "best": r["last"]} for s, r in seeds.items()}
        variants.insert(1, "last epoch")
    print(f"Compared with `{args.base}`; the noise is twice the standard error of the difference over the seeds.\n")
    print("| variant | part | regression: RMSE ratio (geo. mean) | better / worse | classification: accuracy change "
          "| better / worse | CPU s ratio |")
    print("|---|---|---|---|---|---|---|")
    for variant in variants:
        if variant == args.base:
            continue
        for part, tables in (("tune", TUNE), ("holdout", HOLDOUT)):
            print(_summary_row(variant, part, tables, runs, args.base))
    if args.tables_of:
        print(f"\n| table | task | {args.base} | {args.tables_of} | change | noise |")
        print("|---|---|---|---|---|---|")
        for table in CORPUS:
            pair = _pair(runs, table.name, args.base, args.tables_of)
            if pair is not None:
                base, other, noise = pair
                change = other / base - 1
                print(f"| {table.name} | {table.task} | {base:.4g} | {other:.4g} | {change:+.1%} | {noise:.1%} |")


def _pair(runs: dict, table: str, base: str, variant: str) -> tuple[float, float, float] | None:
    """The base's and the variant's mean over the seeds both ran, and the noise of their relative difference."""
    a, b = runs.get((table, base), {}), runs.get((table, variant), {})
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    x = np.array([a[s]["best"] for s in seeds])
    y = np.array([b[s]["best"] for s in seeds])
    relative = y / x - 1
    noise = 2 * relative.std(ddof=1) / math.sqrt(len(seeds)) if len(seeds) > 1 else math.nan
    return float(x.mean()), float(y.mean()), float(noise)


def _summary_row(variant: str, part: str, tables: list[Table], runs: dict, base: str) -> str:
    ratios, changes, better, worse, cpu = [], [], [0, 0], [0, 0], []
    for table in tables:
        pair = _pair(runs, table.name, base, variant)
        if pair is None:
            continue
        mean_base, mean_variant, noise = pair
        regression = table.task == "regression"
        change = mean_variant / mean_base - 1
        gain = -change if regression else change
        index = 0 if regression else 1
        if abs(change) > noise:
            (better if gain > 0 else worse)[index] += 1
        (ratios if regression else changes).append(mean_variant / mean_base if regression
                                                   else mean_variant - mean_base)
        a, b = runs[(table.name, base)], runs[(table.name, variant)]
        cpu.append(np.mean([r["cpu_s"] for r in b.values()]) / max(1e-9, np.mean([r["cpu_s"] for r in a.values()])))
    ratio = f"{math.exp(np.mean(np.log(ratios))):.3f} ({len(ratios)} tables)" if ratios else "-"
    change = f"{np.mean(changes):+.4f} ({len(changes)} tables)" if changes else "-"
    return (f"| {variant} | {part} | {ratio} | {better[0]} / {worse[0]} | {change} | {better[1]} / {worse[1]} | "
            f"{np.mean(cpu):.2f} |" if cpu else f"| {variant} | {part} | - | - | - | - | - |")


if __name__ == "__main__":
    main()

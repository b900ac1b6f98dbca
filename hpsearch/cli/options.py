"""The options of a search, declared once: ``run``, ``submit`` and ``slurm`` take the same ones and apply them
to the space file's :class:`~hpsearch.space.search.Search` the same way."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from hpsearch.errors import SpaceError

if TYPE_CHECKING:
    from hpsearch.space import Search

__all__ = ["SEARCH_OPTIONS", "TRACKING_URI_HELP", "add_search_options", "add_top", "positive_int", "search_argv",
           "with_overrides"]

#: (flag, argparse keywords): what overrides the space file, or says where the search runs and is tracked
TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite in ./mlruns)"

SEARCH_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--num-samples", {"type": int, "metavar": "N", "help": "number of trials"}),
    ("--time-budget", {"metavar": "T", "help": "stop starting trials after T (seconds, or 90s, 10m, 2h); running "
                                               "trials stop at the end of their epoch"}),
    ("--patience", {"type": int, "metavar": "N", "help": "end the search after N finished trials without a new best"}),
    ("--goal", {"type": float, "metavar": "VALUE", "help": "end the search once a trial's metric reaches VALUE"}),
    ("--max-epochs", {"type": int, "metavar": "E", "help": "most epochs a trial trains"}),
    ("--experiment", {"metavar": "NAME", "help": "MLflow experiment (default: the space file's stem)"}),
    ("--tracking-uri", {"metavar": "URI", "help": TRACKING_URI_HELP + "; on several nodes: a server, http://HOST:5000"}),
    ("--storage", {"metavar": "PATH_OR_URI", "help": "checkpoints: a folder every node shares or an object store "
                                                       "URI (default ./ray_results)"}),
    ("--searcher", {"choices": ("tpe", "random", "grid"),
                    "help": "what proposes the configurations: Optuna's TPE, random, or the whole grid of choices"}),
    ("--scheduler", {"choices": ("asha", "fifo"),
                     "help": "asha stops weak trials early; fifo runs every trial to its last epoch"}),
    ("--seed", {"type": int, "metavar": "S", "help": "seeds the split, the searcher and every trial"}),
    ("--cpus-per-trial", {"type": float, "metavar": "C", "help": "CPUs each trial takes (default 1)"}),
    ("--gpus-per-trial", {"type": float, "metavar": "G", "help": "GPUs each trial takes, fractions allowed "
                                                                 "(default 0)"}),
    ("--executor", {"choices": ("auto", "ray", "local", "batched"),
                    "help": "ray (default): Ray Tune trials in parallel; local: trials one after another in this "
                            "process, no Ray start-up; batched: populations of trials trained as one model; "
                            "auto: batched for small networks, else local for a small budget, else ray"}),
]


def add_search_options(parser: argparse.ArgumentParser, title: str | None = None) -> None:
    """Add :data:`SEARCH_OPTIONS` to a command (in a group of their own when ``title`` is given)."""
    group = parser.add_argument_group(title) if title else parser
    for flag, keywords in SEARCH_OPTIONS:
        group.add_argument(flag, **keywords)


def add_top(parser: argparse.ArgumentParser, what: str) -> None:
    """``--top K``, with the same default in every command that shows the best trials."""
    from hpsearch.show import DEFAULT_TOP

    parser.add_argument("--top", type=positive_int, default=DEFAULT_TOP, metavar="K",
                        help=f"{what} (default {DEFAULT_TOP})")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--top 0`` is a mistake, not an empty table)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {value}")
    return value


def search_argv(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> list[str]:
    """The search options the user gave, as ``hpsearch run`` words (for a Ray job or a batch script)."""
    argv = []
    for flag, _ in SEARCH_OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and flag not in skip:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def with_overrides(search: Search, args: argparse.Namespace) -> Search:
    """The space file's search with the command line's values, checked as the space file's own are."""
    resources = dict(search.resources)
    if args.cpus_per_trial is not None:
        resources["cpu"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        resources["gpu"] = args.gpus_per_trial
    try:
        return search.replace(num_samples=args.num_samples, max_epochs=args.max_epochs, searcher=args.searcher,
                              scheduler=args.scheduler, seed=args.seed, resources=resources, executor=args.executor,
                              time_budget=args.time_budget, patience=args.patience, goal=args.goal)
    except SpaceError as err:
        raise SpaceError(f"{err.message} (from the command line)", field=err.field, path=str(args.space_file)) from None

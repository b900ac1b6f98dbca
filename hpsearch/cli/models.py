"""The commands that take a search's winner away: ``best``, ``export``, ``train`` and ``predict``.

Argument parsing and printing only (the work is in :mod:`hpsearch.results.export`, :mod:`hpsearch.results.retrain` and
:mod:`hpsearch.results.predict`); :func:`add_commands` is called once by :mod:`hpsearch.cli.main`. Heavy imports (torch,
MLflow) happen inside the commands, after the arguments are known to be good.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hpsearch.cli.options import TRACKING_URI_HELP, add_top, positive_int
from hpsearch.errors import NotFoundError
from hpsearch.show import number

__all__ = ["add_commands", "open_search"]


def add_commands(commands: Any) -> None:
    """Add the four subcommands to the CLI's subparsers."""
    best = commands.add_parser("best", help="the best trials of a search, from MLflow")
    _add_search_arguments(best)
    add_top(best, "best trials in the table")
    best.add_argument("--json", action="store_true", help="print JSON instead of a table")
    best.set_defaults(command=_best)

    export = commands.add_parser("export", help="write the best trial's configuration to a YAML or JSON file")
    _add_search_arguments(export)
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="best.yaml or best.json")
    export.set_defaults(command=_export)

    train = commands.add_parser("train", help="retrain an exported configuration, tracked in MLflow")
    train.add_argument("config", type=Path, metavar="CONFIG", help="a file written by `hpsearch export`")
    train.add_argument("--epochs", type=positive_int, metavar="N", help="epochs (default: as many as the trial)")
    train.add_argument("--full-data", action="store_true", help="train on train + validation (test stays out)")
    train.add_argument("--tracking-uri", metavar="URI", help="MLflow store (default: the one the file names)")
    train.set_defaults(command=_train)

    predict = commands.add_parser("predict", help="predict the raw rows of a CSV file with a logged model")
    predict.add_argument("model_uri", metavar="MODEL_URI", help="models:/NAME@best, runs:/RUN_ID/pyfunc_model, ...")
    predict.add_argument("input", type=Path, metavar="INPUT.csv", help="rows with the columns the model was trained on")
    predict.add_argument("-o", "--output", type=Path, metavar="FILE",
                         help="write the predictions CSV there (default: standard output)")
    predict.add_argument("--keep", action="append", default=[], metavar="COLUMN",
                         help="an input column (an id) to write beside the predictions; repeat it for more, "
                              "or --keep all for every input column")
    predict.add_argument("--tracking-uri", metavar="URI", help=TRACKING_URI_HELP)
    predict.set_defaults(command=_predict)


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                        help="MLflow experiment (default: the latest search in the store)")
    parser.add_argument("--search", metavar="RUN_ID", help="a given search (its parent run id), not the latest")
    parser.add_argument("--tracking-uri", metavar="URI", help=TRACKING_URI_HELP)


# ------------------------------------------------------------------------------------------------ commands
def _best(args: argparse.Namespace) -> int:
    from hpsearch.results.export import best_trial, rank_trials
    from hpsearch.space import hyperparameters

    client, _, search = open_search(args)
    best_trial(client, search)  # no completed trial: an error, not an empty table
    everyone = rank_trials(client, search)
    ranked = everyone[: args.top]
    metric, mode = search.data.params["metric"], search.data.params["mode"]
    from hpsearch.tracking.schema import tested_models

    tested = tested_models(search.data.metrics, everyone[0].name)  # the best trial, the ensemble, the tree
    if args.json:
        rows = [{"rank": i + 1, "trial": t.name, "run_id": t.run_id, "status": t.status, metric: t.value(metric),
                 "epochs": t.epochs, "hyperparameters": hyperparameters(t.params)} for i, t in enumerate(ranked)]
        print(json.dumps({"search_run_id": search.info.run_id, "metric": metric, "mode": mode, "trials": rows,
                          "test": {kind: figures for kind, _, figures in tested}}, indent=2))
        return 0
    from hpsearch.show import comparison_lines, text_table, trials_table

    header, rows = trials_table(everyone, metric, args.top)
    print(f"search {search.info.run_id} ({search.info.run_name}): best {len(rows)} trials by {metric} ({mode})")
    for line in [*text_table(header, rows), *comparison_lines(tested)]:
        print(line)
    return 0


def _export(args: argparse.Namespace) -> int:
    from hpsearch.results.export import best_trial, build_export, read_export, write_export

    client, uri, search = open_search(args)
    document = build_export(client, uri, search, best_trial(client, search))
    write_export(document, args.output)
    read_export(args.output)  # what we write must read back
    print(f"wrote {args.output}: {document['trial']} of search {search.info.run_id}, "
          f"{document['settings']['metric']}={number(document['metrics']['validation'][document['settings']['metric']])}")
    print(f"retrain it with:\n  python -m hpsearch train {args.output}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from hpsearch.results.export import read_export

    document = read_export(args.config)
    from hpsearch.results.retrain import retrain

    result = retrain(document, source=args.config, epochs=args.epochs, full_data=args.full_data,
                     tracking_uri=args.tracking_uri)
    shown = ", ".join(f"{k}={number(v)}" for k, v in {**result.metrics, **result.test_metrics}.items())
    print(f"retrained for {result.epochs} epochs: {shown}")
    print(f"run {result.run_id} in experiment {result.experiment!r}; model: {result.model_uri}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import sys

    from hpsearch.results.predict import predict_csv

    count = predict_csv(args.model_uri, args.input, args.output, keep=args.keep, tracking_uri=args.tracking_uri,
                        on_event=lambda line: print(line, file=sys.stderr))
    if args.output is not None:  # else the predictions are on standard output, and nothing else is
        print(f"wrote {count} predictions to {args.output}")
    return 0


# ------------------------------------------------------------------------------------------------- helpers
def open_search(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """The store and the search that ``best``, ``export`` and ``report`` look at: ``--search RUN_ID``, else the
    latest search of ``EXPERIMENT`` (of any experiment when not given). One function, so that "no store here"
    and "no such search" read the same in every command."""
    from hpsearch.tracking.connection import DEFAULT_STORE, connect
    from hpsearch.tracking.reader import find_search

    if args.tracking_uri is None and not (DEFAULT_STORE / "mlflow.db").is_file():
        raise NotFoundError(f"no MLflow store in this folder ({Path.cwd() / DEFAULT_STORE / 'mlflow.db'} does not "
                            "exist); run a search here first, or pass --tracking-uri URI")
    client, uri = connect(args.tracking_uri)
    return client, uri, find_search(client, args.experiment, args.search)


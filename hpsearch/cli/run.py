"""``run`` and ``resume``: a search from a space file, its progress and its summary.

The work happens in :func:`hpsearch.execution.search.run_search`; this module parses, prints and picks the
exit code (1 when every trial failed, 130 when interrupted).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from hpsearch.cli.options import add_search_options, add_top, with_overrides
from hpsearch.errors import HpsearchError

__all__ = ["add_commands"]

#: The modules whose functions the search's store process runs (by name): imported there while this one loads torch.
STORE_MODULES = ("hpsearch.tracking.tracker", "hpsearch.tracking.reader", "hpsearch.results.publish")
EXIT_ALL_TRIALS_FAILED = 1
EXIT_INTERRUPTED = 130


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``resume``."""
    run = commands.add_parser("run", help="run the search a space file describes")
    run.add_argument("space_file", type=Path, metavar="SPACE_FILE", help="a Python file defining `search`")
    add_search_options(run)
    add_top(run, "best trials shown at the end")
    run.add_argument("--resume", action="store_true", help="continue the experiment's interrupted search")
    run.add_argument("--max-failures", type=int, default=0, metavar="N",
                     help="retry a failed trial up to N times from its last checkpoint (default 0)")
    run.add_argument("--no-plots", action="store_true", help="do not log the figures to MLflow at the end")
    talk = run.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="no progress, only warnings and the summary")
    talk.add_argument("-v", "--verbose", action="store_true", help="also every trial start and every epoch")
    run.add_argument("--address", metavar="ADDRESS", help="an existing Ray cluster: auto or HOST:PORT")
    run.set_defaults(command=_run)
    resume = commands.add_parser("resume", help="continue the interrupted search of an experiment")
    resume.add_argument("experiment", metavar="EXPERIMENT",
                        help="the MLflow experiment whose latest unfinished search continues")
    resume.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite in ./mlruns)")
    resume.add_argument("--max-failures", type=int, default=0, metavar="N",
                        help="retry a failed trial up to N times from its last checkpoint (default 0)")
    add_top(resume, "best trials shown at the end")
    resume.set_defaults(command=_resume)


def _run(args: argparse.Namespace) -> int:
    from hpsearch.tracking.store import StoreProcess

    # MLflow loads and opens the store in a process of its own while this one loads torch (hpsearch.tracking.store)
    store = StoreProcess.start(args.tracking_uri, preload=STORE_MODULES)
    try:
        return _run_search(args, store)
    finally:
        store.close()


def _run_search(args: argparse.Namespace, store) -> int:  # noqa: ANN001 - hpsearch.tracking.store.Store, imported lazily
    from hpsearch.space import load_space

    search = load_space(args.space_file)
    search = with_overrides(search, args)
    if args.resume and search.executor not in ("local", "batched"):  # (refused by run_search)
        # nothing to resume where no store is: say so, and create none
        from hpsearch.tracking.connection import check_store_exists

        check_store_exists(args.tracking_uri)
    if args.max_failures < 0:
        raise HpsearchError(f"--max-failures must be >= 0, but got {args.max_failures}")
    from hpsearch.execution.progress import NORMAL, QUIET, VERBOSE, Progress, format_duration

    display = Progress(QUIET if args.quiet else VERBOSE if args.verbose else NORMAL)  # its clock starts here
    from hpsearch.execution.search import (  # Ray and torch load once the space file is good
        SearchInterrupted,
        run_search,
    )

    try:
        outcome = run_search(search, args.space_file, experiment=args.experiment, tracking_uri=args.tracking_uri,
                             resume=args.resume, max_failures=args.max_failures,
                             address=args.address, storage=args.storage,
                             progress=display, plots=not args.no_plots, executor=search.executor,
                             store=store)
    except HpsearchError as err:  # the data, the metric, the resources, the store: say which space file
        if str(err).startswith(str(args.space_file)):
            raise
        raise HpsearchError(f"{args.space_file}: {err}") from None
    except KeyboardInterrupt as err:
        detail = f" ({err})" if isinstance(err, SearchInterrupted) else ""
        again = " ".join(["python -m hpsearch run", str(args.space_file), "--resume",
                          *(["--experiment", args.experiment] if args.experiment else []),
                          *(["--tracking-uri", args.tracking_uri] if args.tracking_uri else [])])
        print(f"\ninterrupted{detail}: finished trials are kept, unfinished runs are marked KILLED.\n"
              f"resume with:\n  {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    counts = outcome.counts()
    print(f"\nsearch finished in {format_duration(display.elapsed())}: "  # the status line's clock
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    _print_best(outcome, args.top)
    print(f"\nexperiment {outcome.experiment!r}, search run {outcome.parent_run_id}")
    for line in _where_to_look(outcome, args.tracking_uri, plots=not args.no_plots):
        print(line)
    if counts["failed"] == len(outcome.trials):
        print("error: every trial failed; see the trials' error.txt in MLflow", file=sys.stderr)
        return EXIT_ALL_TRIALS_FAILED
    return 0


def _where_to_look(outcome: Any, tracking_uri: str | None, *, plots: bool) -> list[str]:
    """How to see the search in MLflow 3's UI: the page of the experiment's runs, not the GenAI overview it
    opens on; and the report."""
    from hpsearch.tracking.ui import DEFAULT_HOST, DEFAULT_PORT, runs_url

    store = f" --tracking-uri {tracking_uri}" if tracking_uri else ""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        lines = [f"see its trials in the MLflow UI: {runs_url(tracking_uri.rstrip('/'), outcome.experiment_id)}"]
    else:
        page = runs_url(f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", outcome.experiment_id)
        lines = [f"see its trials in the MLflow UI: python -m hpsearch ui{store}",
                 f"  then open {page} (the + before the search's row shows its trials)"]
    if plots:
        lines.append(f"  figures: the search run's plots/ artifacts; a report: python -m hpsearch report "
                     f"{shlex.quote(outcome.experiment)}{store} -o report.html")
    return lines


def _resume(args: argparse.Namespace) -> int:
    from hpsearch.tracking.reader import latest_space_file

    space_file = latest_space_file(args.tracking_uri, args.experiment)
    parser = argparse.ArgumentParser(prog="hpsearch")
    add_commands(parser.add_subparsers())
    run_args = parser.parse_args(["run", str(space_file), "--resume", "--experiment", args.experiment,
                                     "--max-failures", str(args.max_failures), "--top", str(args.top),
                                     *(["--tracking-uri", args.tracking_uri] if args.tracking_uri else [])])
    return _run(run_args)


def _print_best(outcome, top: int) -> None:  # noqa: ANN001 - SearchOutcome, imported lazily
    from hpsearch.show import number, text_table, trials_table

    ranked = outcome.ranked()
    if not ranked:
        return
    header, rows = trials_table(ranked, outcome.metric, top)
    print(f"\nbest {len(rows)} trials by {outcome.metric} ({outcome.mode}):")
    for line in text_table(header, rows):
        print(line)
    if outcome.test_metrics:
        shown = ", ".join(f"{k}={number(v)}" for k, v in outcome.test_metrics.items())
        print(f"best trial {outcome.best.name} on the test split: {shown}")

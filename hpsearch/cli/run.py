"""``run`` and ``resume``: a search from a space file, its progress and its summary.

The work happens in :func:`hpsearch.execution.search.run_search`; this module parses, prints and picks the
exit code (1 when every trial failed, 130 when interrupted by Ctrl-C, 143 when stopped by SIGTERM).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from hpsearch.cli.options import TRACKING_URI_HELP, add_search_options, add_top, search_argv, with_overrides
from hpsearch.cli.terminate import EXIT_TERMINATED, terminate_as_interrupt
from hpsearch.errors import HpsearchError

__all__ = ["EXIT_TERMINATED", "add_commands"]

#: The modules whose functions the search's store process runs (by name): imported there while this one loads torch.
STORE_MODULES = ("hpsearch.tracking.tracker", "hpsearch.tracking.reader", "hpsearch.tracking.resumed",
                 "hpsearch.results.publish")
EXIT_ALL_TRIALS_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
RAY_SHUTDOWN_AFTER_TERM_S = 5.0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``resume``."""
    run = commands.add_parser("run", help="run the search a space file describes")
    run.add_argument("space_file", type=Path, metavar="SPACE_FILE", help="a Python file defining `search`")
    add_search_options(run)
    add_top(run, "best trials shown at the end")
    run.add_argument("--resume", action="store_true",
                     help="continue the experiment's latest search (the same as: hpsearch resume EXPERIMENT)")
    run.add_argument("--max-failures", type=int, default=0, metavar="N",
                     help="retry a failed trial up to N times from its last checkpoint (default 0)")
    run.add_argument("--no-plots", action="store_true", help="do not log the figures to MLflow at the end")
    talk = run.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="no progress, only warnings and the summary")
    talk.add_argument("-v", "--verbose", action="store_true", help="also every trial start and every epoch")
    run.add_argument("--address", metavar="ADDRESS", help="an existing Ray cluster: auto or HOST:PORT")
    run.set_defaults(command=_run)
    resume = commands.add_parser("resume", help="continue the latest search of an experiment, interrupted or "
                                                "finished (with more trials or time)")
    resume.add_argument("experiment", metavar="EXPERIMENT",
                        help="the MLflow experiment whose latest search continues")
    resume.add_argument("--num-samples", type=int, metavar="N",
                        help="trials in all, those the search has included (more trials for a finished search)")
    resume.add_argument("--time-budget", metavar="T",
                        help="run for T more (seconds, or 90s, 10m, 2h); without --num-samples, trials until it "
                             "is spent")
    resume.add_argument("--tracking-uri", metavar="URI", help=TRACKING_URI_HELP)
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
    from hpsearch.execution.progress import NORMAL, QUIET, VERBOSE, Progress, format_duration

    # Its clock starts here, before the space file's imports: the command's time, and a time budget's start.
    display = Progress(QUIET if args.quiet else VERBOSE if args.verbose else NORMAL)
    from hpsearch.space import load_space

    search = load_space(args.space_file)
    search = with_overrides(search, args)
    if args.max_failures < 0:
        raise HpsearchError(f"--max-failures must be >= 0, but got {args.max_failures}")
    from hpsearch.loading import imports_without_gc

    with imports_without_gc():  # torch, scikit-learn, pandas, Optuna: once the space file is good
        from hpsearch.execution.search import SearchInterrupted, abort_in_progress, run_search

    if args.resume:  # nothing to resume where no store is: say so, and create none
        from hpsearch.tracking.connection import check_store_exists

        check_store_exists(args.tracking_uri)
    experiment = args.experiment or search.experiment or args.space_file.stem
    asked = {key: getattr(args, key) for key in ("num_samples", "time_budget") if getattr(args, key) is not None}
    if "time_budget" in asked:
        asked["time_budget"] = search.time_budget  # checked and in seconds
    store_option = ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    again = shlex.join(["python", "-m", "hpsearch", "resume", experiment, *store_option])

    def stuck() -> None:  # SIGTERM, and the main thread blocked in Ray: see hpsearch.cli.terminate
        if abort_in_progress():
            print(f"\nstopped by SIGTERM: finished trials are kept, unfinished runs are marked KILLED.\n"
                  f"resume with:\n  {again}", file=sys.stderr)

    with terminate_as_interrupt(stuck) as received:
        try:
            outcome = run_search(search, args.space_file, experiment=args.experiment, tracking_uri=args.tracking_uri,
                                 resume=args.resume, asked=asked if args.resume else None,
                                 max_failures=args.max_failures, address=args.address, storage=args.storage,
                                 progress=display, plots=not args.no_plots, executor=search.executor, store=store)
        except HpsearchError as err:  # the data, the metric, the resources, the store: say which space file
            if str(err).startswith(str(args.space_file)):
                raise
            raise HpsearchError(f"{args.space_file}: {err}") from None
        except KeyboardInterrupt as err:
            how = "stopped by SIGTERM" if received else "interrupted"
            if isinstance(err, SearchInterrupted) or args.resume:
                done = f" ({err})" if str(err) else ""
                print(f"\n{how}{done}: finished trials are kept, unfinished runs are marked KILLED.\n"
                      f"resume with:\n  {again}", file=sys.stderr, flush=True)
            else:
                first = shlex.join(["python", "-m", "hpsearch", "run", str(args.space_file), *search_argv(args)])
                print(f"\n{how} before the search started: nothing was written. Start it again with:\n  {first}",
                      file=sys.stderr, flush=True)
            if received:  # said first: Ray's processes may be gone too, and Ray may end this one as it shuts down
                from hpsearch.execution.ray_tune import end_ray_within

                end_ray_within(RAY_SHUTDOWN_AFTER_TERM_S)
            return EXIT_TERMINATED if received else EXIT_INTERRUPTED
    counts = outcome.counts()
    print(f"\nsearch finished in {format_duration(display.elapsed())}: "  # the status line's clock
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    _print_best(outcome, args.top)
    print(f"\nexperiment {outcome.experiment!r}, search run {outcome.parent_run_id}")
    for line in _where_to_look(outcome, args.tracking_uri, plots=not args.no_plots):
        print(line)
    if outcome.trials and counts["failed"] == len(outcome.trials):
        print("error: every trial failed; see the trials' error.txt in MLflow", file=sys.stderr)
        return EXIT_ALL_TRIALS_FAILED
    print(f"the search ended: {outcome.ended_because}")
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
    from hpsearch.tracking.reader import resumable_search

    # refused here, before any data is loaded or Ray started, where there is nothing to continue
    found = resumable_search(args.tracking_uri, args.experiment, num_samples=args.num_samples,
                             more=args.num_samples is not None or args.time_budget is not None)
    parser = argparse.ArgumentParser(prog="hpsearch")
    add_commands(parser.add_subparsers())
    more = [*(["--num-samples", str(args.num_samples)] if args.num_samples is not None else []),
            *(["--time-budget", args.time_budget] if args.time_budget is not None else [])]
    run_args = parser.parse_args(["run", str(found.space_file), "--resume", "--experiment", args.experiment,
                                  "--max-failures", str(args.max_failures), "--top", str(args.top), *more,
                                  *(["--tracking-uri", args.tracking_uri] if args.tracking_uri else [])])
    return _run(run_args)


def _print_best(outcome, top: int) -> None:  # noqa: ANN001 - SearchOutcome, imported lazily
    from hpsearch.show import comparison_lines, text_table, trials_table

    ranked = outcome.ranked()
    if not ranked:
        return
    header, rows = trials_table(ranked, outcome.metric, top)
    print(f"\nbest {len(rows)} trials by {outcome.metric} ({outcome.mode}):")
    for line in text_table(header, rows):
        print(line)
    for line in comparison_lines(outcome.tested()):  # the best trial, the ensemble, the default tree
        print(line)

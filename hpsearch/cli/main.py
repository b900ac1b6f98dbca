"""The command line: argument parsing and printing only; the work happens in :mod:`hpsearch.execution.search`.

Every :class:`HpsearchError` (a mistake the user can fix) becomes one line on stderr and exit code 2; a
:class:`MachineError` or an ``OSError`` (the machine failed) one line and exit code 3; any other exception (a
bug) its traceback and exit code 70. Exit code 1 means only that every trial failed.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from hpsearch.cli.models import add_commands as add_model_commands
from hpsearch.errors import HpsearchError, MachineError, describe_os_error
from hpsearch.model.user_model import ModelFunctionError

__all__ = ["exit_process", "main", "parser", "program"]

EXIT_ALL_TRIALS_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_MACHINE_ERROR = 3  # the machine or a service failed: a read-only folder, a full disk, a store gone
EXIT_INTERNAL_ERROR = 70  # a bug in hpsearch (sysexits' EX_SOFTWARE): never 1, which means every trial failed
EXIT_INTERRUPTED = 130


def program() -> NoReturn:
    """The process entry point (``python -m hpsearch``, the ``hpsearch`` console script): :func:`main`, then exit."""
    exit_process(main())


_exit_code: int | None = None  # set by exit_process: the process then ends in _exit_without_teardown


def exit_process(code: int) -> NoReturn:
    """End the process once its threads are joined and its exit handlers have run, without the interpreter's
    teardown of its modules.

    The work is done and written by now (MLflow commits every call). ``sys.exit`` lets the interpreter do what it
    does at exit, in its own order: join the threads (and stop ``concurrent.futures`` pools), then run the exit
    handlers of Ray, logging and multiprocessing; the last handler to run is :func:`_exit_without_teardown`,
    registered when this module loads (``atexit`` runs handlers last-registered first), which ends the process
    there. Only the freeing of torch's, MLflow's and SQLAlchemy's module objects one by one is skipped: 1.5-2 s
    on 2 cores, a tenth of a small search, for nothing anyone sees. (Handlers registered before this module
    loads, by a ``.pth`` file at start-up, would run after it: skipped too; logging's is run here.)
    """
    global _exit_code
    _exit_code = code
    sys.exit(code)


def _exit_without_teardown() -> None:
    """The last exit handler of a process that :func:`exit_process` ends: flush what is written, and end it."""
    if _exit_code is None:  # hpsearch used as a library (tests, a notebook): the interpreter exits as usual
        return
    logging.shutdown()  # in case logging registered its own handler before this one (it then runs after it)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_code)


atexit.register(_exit_without_teardown)  # before any library the commands import registers its own


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (tests call it in-process; :func:`program` is the process)."""
    args = _parser().parse_args(argv)
    if hasattr(args, "tracking_uri"):  # every command: MLFLOW_TRACKING_URI when --tracking-uri is not given
        from hpsearch.tracking.tracker import tracking_uri_from

        args.tracking_uri = tracking_uri_from(args.tracking_uri)
    try:
        return args.command(args)
    except (HpsearchError, ModelFunctionError) as err:  # the second: a space file's model function, retrained
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: the search's runs were closed as KILLED", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (MachineError, OSError) as err:
        shown = describe_os_error(err) if isinstance(err, OSError) else str(err)
        print(f"error: {shown}", file=sys.stderr)
        return EXIT_MACHINE_ERROR
    except Exception as err:  # noqa: BLE001 - a bug: its traceback, and an exit code no outcome of a search has
        if (machine := _machine_error_in(err)) is not None:  # wrapped on its way (Ray Tune wraps its callbacks')
            print(f"error: {machine}", file=sys.stderr)
            return EXIT_MACHINE_ERROR
        traceback.print_exc()
        print(f"internal error in hpsearch (exit code {EXIT_INTERNAL_ERROR}); please report it with the traceback "
              "above", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _machine_error_in(err: BaseException) -> MachineError | None:
    """The :class:`MachineError` an exception was raised from or while handling, if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, MachineError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def parser() -> argparse.ArgumentParser:
    """The command line's parser, every subcommand included (the tests walk its options)."""
    return _parser()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpsearch", description="Hyperparameter search for PyTorch models.")
    parser.add_argument("--version", action=_Version, help="print the versions of hpsearch and its engines")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the search a space file describes")
    run.add_argument("space_file", type=Path, metavar="SPACE_FILE", help="a Python file defining `search`")
    run.add_argument("--num-samples", type=int, metavar="N", help="number of trials")
    run.add_argument("--max-epochs", type=int, metavar="E", help="most epochs a trial trains")
    run.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the space file's stem)")
    run.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite in ./mlruns)")
    run.add_argument("--searcher", choices=("tpe", "random", "grid"),
                     help="what proposes the configurations: Optuna's TPE, random, or the whole grid of choices")
    run.add_argument("--scheduler", choices=("asha", "fifo"),
                     help="asha stops weak trials early; fifo runs every trial to its last epoch")
    run.add_argument("--seed", type=int, metavar="S", help="seeds the split, the searcher and every trial")
    run.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPUs each trial takes (default 1)")
    run.add_argument("--gpus-per-trial", type=float, metavar="G",
                     help="GPUs each trial takes, fractions allowed (default 0)")
    _add_top(run, "best trials shown at the end")
    run.add_argument("--resume", action="store_true", help="continue the experiment's interrupted search")
    run.add_argument("--max-failures", type=int, default=0, metavar="N",
                     help="retry a failed trial up to N times from its last checkpoint (default 0)")
    run.add_argument("--no-plots", action="store_true", help="do not log the figures to MLflow at the end")
    talk = run.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="no progress, only warnings and the summary")
    talk.add_argument("-v", "--verbose", action="store_true", help="also every trial start and every epoch")
    run.add_argument("--address", metavar="ADDRESS", help="an existing Ray cluster: auto or HOST:PORT")
    run.add_argument("--storage", metavar="PATH_OR_URI",
                     help="checkpoints: a folder every node shares or an object store URI (default ./ray_results)")
    run.add_argument("--executor", choices=("auto", "ray", "local", "batched"),
                     help="ray (default): Ray Tune trials in parallel; local: trials one after another in this "
                          "process, no Ray start-up; batched: populations of trials trained as one model; "
                          "auto: batched for small networks, else local for a small budget, else ray")
    run.set_defaults(command=_run)
    resume = commands.add_parser("resume", help="continue the interrupted search of an experiment")
    resume.add_argument("experiment", metavar="EXPERIMENT",
                        help="the MLflow experiment whose latest unfinished search continues")
    resume.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite in ./mlruns)")
    resume.add_argument("--max-failures", type=int, default=0, metavar="N",
                        help="retry a failed trial up to N times from its last checkpoint (default 0)")
    _add_top(resume, "best trials shown at the end")
    resume.set_defaults(command=_resume)
    add_model_commands(commands)  # best, export, train, predict (hpsearch.cli.models)
    _add_view_commands(commands)
    from hpsearch.cli import cluster as cluster_cli

    cluster_cli.add_commands(commands)
    return parser


def _add_top(parser: argparse.ArgumentParser, what: str) -> None:
    """``--top K``, with the same default in every command that shows the best trials."""
    from hpsearch.show import DEFAULT_TOP

    parser.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="K", help=f"{what} (default {DEFAULT_TOP})")


class _Version(argparse.Action):
    """``hpsearch --version``: hpsearch's version and those of the engines it drives, read from the installed
    packages' metadata (nothing is imported), then exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> NoReturn:
        import importlib.metadata
        import platform

        from hpsearch import __version__

        def version(package: str) -> str:
            try:
                return importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                return "not installed"

        engines = ", ".join(f"{p} {version(p)}" for p in ("torch", "ray", "optuna", "mlflow"))
        print(f"hpsearch {__version__} ({engines}, Python {platform.python_version()})")  # stdout, as argparse's
        parser.exit()


def _add_view_commands(commands: argparse._SubParsersAction) -> None:
    """``ui`` and ``report``: looking at searches already tracked."""
    ui = commands.add_parser("ui", help="start the MLflow UI on the project's tracking store")
    ui.add_argument("--port", type=int, default=5000, metavar="P", help="port (default 5000)")
    ui.add_argument("--host", default="127.0.0.1", metavar="H", help="interface to bind (default 127.0.0.1)")
    ui.add_argument("--tracking-uri", metavar="URI", help="MLflow backend store (default: sqlite in ./mlruns)")
    ui.set_defaults(command=_ui)
    report = commands.add_parser("report", help="write one self-contained HTML page about a search")
    report.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                        help="its latest search is reported (default: the latest search of any experiment)")
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"), metavar="FILE",
                        help="where to write the page (default report.html)")
    report.add_argument("--search", metavar="RUN_ID", help="a given search (its parent run id), not the latest")
    report.add_argument("--run", dest="search", help=argparse.SUPPRESS)  # its name before 0.x: still accepted
    report.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite in ./mlruns)")
    _add_top(report, "best trials in the table")
    report.set_defaults(command=_report)


def _run(args: argparse.Namespace) -> int:
    from hpsearch.tracking.store import LocalStore

    store = LocalStore(args.tracking_uri)
    try:
        return _run_search(args, store)
    finally:
        store.close()


def _run_search(args: argparse.Namespace, store) -> int:  # noqa: ANN001 - hpsearch.tracking.store.Store, imported lazily
    from hpsearch.space.search import load_space

    search = load_space(args.space_file)
    search = _with_overrides(search, args)
    if args.resume and (args.executor or search.executor) not in ("local", "batched"):  # (refused by run_search)
        # nothing to resume where no store is: say so, and create none
        from hpsearch.tracking.tracker import check_store_exists

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
                             resume=args.resume, max_failures=args.max_failures, on_event=display.message,
                             address=args.address, storage=args.storage,
                             progress=display, plots=not args.no_plots, executor=args.executor or search.executor,
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


def _ui(args: argparse.Namespace) -> int:
    from hpsearch.tracking.ui import serve

    return serve(args.tracking_uri, args.host, args.port)


def _report(args: argparse.Namespace) -> int:
    from hpsearch.cli.models import open_search
    from hpsearch.figures.report import write_report

    client, _, search = open_search(args)
    existed = args.output.exists()
    path, notes = write_report(client, search.info.run_id, args.output, top=args.top)
    for note in notes:
        print(note)
    verb = "overwrote" if existed else "wrote"
    print(f"{verb} {path} ({path.stat().st_size / 1e6:.1f} MB): report of search {search.info.run_id}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from hpsearch.tracking.tracker import latest_space_file

    space_file = latest_space_file(args.tracking_uri, args.experiment)
    run_args = _parser().parse_args(["run", str(space_file), "--resume", "--experiment", args.experiment,
                                     "--max-failures", str(args.max_failures), "--top", str(args.top),
                                     *(["--tracking-uri", args.tracking_uri] if args.tracking_uri else [])])
    return _run(run_args)


def _with_overrides(search, args: argparse.Namespace):  # noqa: ANN001, ANN202 - Search, imported lazily
    from hpsearch.errors import SpaceError

    resources = dict(search.resources)
    if args.cpus_per_trial is not None:
        resources["cpu"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        resources["gpu"] = args.gpus_per_trial
    try:
        return search.replace(num_samples=args.num_samples, max_epochs=args.max_epochs, searcher=args.searcher,
                              scheduler=args.scheduler, seed=args.seed, resources=resources)
    except SpaceError as err:
        raise SpaceError(f"{err.message} (from the command line)", field=err.field, path=str(args.space_file)) from None


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

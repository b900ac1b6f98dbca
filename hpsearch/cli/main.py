"""The command line's entry point: the parser of every command, and the exit codes.

Every :class:`HpsearchError` (a mistake the user can fix) becomes one line on stderr and exit code 2; a
:class:`MachineError` or an ``OSError`` (the machine failed) one line and exit code 3; any other exception (a
bug) its traceback and exit code 70. Exit code 1 means only that every trial failed.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from hpsearch.cli import cluster, models, run, views
from hpsearch.errors import HpsearchError, MachineError, describe_os_error
from hpsearch.model.user_model import ModelFunctionError

__all__ = ["exit_process", "main", "parser", "program"]

EXIT_ALL_TRIALS_FAILED = run.EXIT_ALL_TRIALS_FAILED  # every trial failed
EXIT_USER_ERROR = 2
EXIT_MACHINE_ERROR = 3  # the machine or a service failed: a read-only folder, a full disk, a store gone
EXIT_INTERNAL_ERROR = 70  # a bug in hpsearch (sysexits' EX_SOFTWARE): never 1, which means every trial failed
EXIT_INTERRUPTED = run.EXIT_INTERRUPTED  # Ctrl-C
EXIT_TERMINATED = run.EXIT_TERMINATED  # SIGTERM


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
        from hpsearch.tracking.connection import tracking_uri_from

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


class _Parser(argparse.ArgumentParser):
    """argparse's parser, without abbreviations (``--num-sample 4`` is a mistake, not ``--num-samples``); its
    subcommands' parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hpsearch", description="Hyperparameter search for PyTorch models.")
    parser.add_argument("--version", action=_Version, help="print the versions of hpsearch and its engines")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run.add_commands(commands)  # run, resume
    models.add_commands(commands)  # best, export, train, predict
    views.add_commands(commands)  # ui, report
    cluster.add_commands(commands)  # submit, slurm
    return parser


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

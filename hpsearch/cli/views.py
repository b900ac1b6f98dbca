"""``ui`` and ``report``: looking at searches already tracked (the MLflow UI on the store, one HTML page)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpsearch.cli.options import TRACKING_URI_HELP, add_top

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``ui`` and ``report``: looking at searches already tracked."""
    ui = commands.add_parser("ui", help="start the MLflow UI on the project's tracking store")
    ui.add_argument("--port", type=int, default=5000, metavar="P", help="port (default 5000)")
    ui.add_argument("--host", default="127.0.0.1", metavar="H", help="interface to bind (default 127.0.0.1)")
    ui.add_argument("--tracking-uri", metavar="URI", help=TRACKING_URI_HELP)
    ui.set_defaults(command=_ui)
    report = commands.add_parser("report", help="write one self-contained HTML page about a search")
    report.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                        help="its latest search is reported (default: the latest search of any experiment)")
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"), metavar="FILE",
                        help="where to write the page (default report.html)")
    report.add_argument("--search", metavar="RUN_ID", help="a given search (its parent run id), not the latest")
    report.add_argument("--run", dest="search", help=argparse.SUPPRESS)  # its name before 0.x: still accepted
    report.add_argument("--tracking-uri", metavar="URI", help=TRACKING_URI_HELP)
    add_top(report, "best trials in the table")
    report.set_defaults(command=_report)


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



"""``hpsearch report``: one self-contained HTML page about a search, to mail or archive, opening without a server.

It holds the search's settings and outcome, the best trials table, the interactive figures (plotly.js inline,
once) and the static images (PNG as base64 ``data:`` URIs), the loss curves of the trials in the table (drawn
here, from their runs' metrics), and the best model's architecture. The figures are
the ones the search logged (``plots/figures.json``); a search that logged none gets its figures drawn again
from its runs' histories (all but the best model's, which need the test split).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import plotly.io as pio
from mlflow import MlflowClient

from hpsearch.figures import html
from hpsearch.figures.layout import FIGURES_FILE, PLOTS_DIR, TRIAL_PNG
from hpsearch.figures.study import describe_space
from hpsearch.figures.visualize import draw_trial_pngs
from hpsearch.show import DEFAULT_TOP, number, trials_table, verdict
from hpsearch.tracking.reader import SearchHistory, load_search
from hpsearch.tracking.schema import TAG_BEST_RUN_ID, TAG_BEST_TRIAL, tested_models

__all__ = ["build_report", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; } tr.best td { background: #eef8ee; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 1em; }
"""


def write_report(client: MlflowClient, parent_run_id: str, path: Path,
                 top: int = DEFAULT_TOP) -> tuple[Path, list[str]]:
    """Write the report of one search to ``path``; return it and notes on what the page lacks, and why."""
    page, notes = _page(client, parent_run_id, top)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path, notes


def build_report(client: MlflowClient, parent_run_id: str, top: int = DEFAULT_TOP) -> str:
    """The report page of one search, as a string."""
    return _page(client, parent_run_id, top)[0]


def _page(client: MlflowClient, parent_run_id: str, top: int) -> tuple[str, list[str]]:
    """The page, and notes on what it lacks (the one place a missing Graphviz is mentioned)."""
    notes = []
    history = load_search(client, parent_run_id)
    with tempfile.TemporaryDirectory(prefix="hpsearch-report-") as tmp:
        plots_dir = _download_plots(client, parent_run_id, Path(tmp))
        figures = _figures(history, plots_dir)
        images = {p.stem: base64.b64encode(p.read_bytes()).decode() for p in sorted(plots_dir.glob("*.png"))}
        shown = history.ranked()[:top]
        draw_trial_pngs(shown, Path(tmp) / "trials")
        curves = {t.name: base64.b64encode(png.read_bytes()).decode() for t in shown
                  if (png := Path(tmp) / "trials" / t.run_id / TRIAL_PNG).is_file()}
        arch = plots_dir / "architecture.txt"
        architecture = arch.read_text() if arch.is_file() else None
        if architecture and not (plots_dir / "architecture.png").is_file():
            notes.append("note: the architecture graph is not in the report: Graphviz `dot` was not installed "
                         "where the search ran (apt-get install graphviz); its text summary is")
    title = f"hpsearch report: {history.experiment} / {history.run_name}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Search run <code>{html.escape(parent_run_id)}</code>, started {html.escape(_when(history.start_ms))}; "
        f"optimising <b>{html.escape(history.metric)}</b> ({html.escape(history.mode)}).</p>",
        _outcome(history),
        "<h2>Best trials</h2>", _best_table(history, top),
        "<h2>Search settings</h2>", _settings(history),
        "<h2>Plots</h2>", _interactive(figures),
        "<h2>Static images</h2>", _images(images),
        "<h2>Loss curves of the best trials</h2>", _images(curves),
    ]
    if architecture:
        body += ["<h2>Best model architecture</h2>", f"<pre>{html.escape(architecture)}</pre>"]
    return html.page(title, "".join(body), style=_STYLE), notes


# ----------------------------------------------------------------------------------------------- sections
def _outcome(history: SearchHistory) -> str:
    counts = {k.removeprefix("trials_"): int(v) for k, v in history.metrics.items() if k.startswith("trials_")}
    best = history.tags.get(TAG_BEST_TRIAL)
    tests = {k.removeprefix("best_"): v for k, v in history.metrics.items() if k.startswith("best_test_")}
    parts = [", ".join(f"{n} {s}" for s, n in counts.items() if n) or f"{len(history.trials)} trials"]
    if best:
        parts.append(f"best trial <b>{html.escape(best)}</b>: {html.escape(history.metric)} = "
                     f"{number(history.metrics.get(f'best_{history.metric}', float('nan')))}")
    if tests:
        parts.append("on the test split " + ", ".join(f"{html.escape(k)} = {number(v)}" for k, v in tests.items()))
    return f"<p>{'; '.join(parts)}.</p>" + _tested(history)


def _tested(history: SearchHistory) -> str:
    """The best trial, the ensemble and the default tree on the test split, and which is better."""
    tested = tested_models(history.metrics, history.tags.get(TAG_BEST_TRIAL))
    if len(tested) < 2:
        return ""
    keys = list(dict.fromkeys(k for _, _, figures in tested for k in figures if k != "loss"))
    rows = [_row([label, *(number(figures[k]) if k in figures else "" for k in keys)])
            for _, label, figures in tested]
    said = verdict(tested)
    return ("<h2>What the search bought</h2>" + _table(["model (test split)", *keys], rows)
            + "".join(f"<p>{html.escape(line)}</p>" for line in said))


def _best_table(history: SearchHistory, top: int) -> str:
    ranked = history.ranked()
    if not ranked:
        return "<p>No trial reported the search's metric.</p>"
    header, rows = trials_table(ranked, history.metric, top)
    best_id = history.tags.get(TAG_BEST_RUN_ID)
    return _table(header, [_row(row, best=t.run_id == best_id) for row, t in zip(rows, ranked, strict=False)])


def _settings(history: SearchHistory) -> str:
    general = [_row([k, v]) for k, v in sorted(history.params.items()) if not k.startswith("space.")]
    space = [_row([k, v]) for k, v in describe_space(history.space()).items()]
    return "<h3>Space</h3>" + _table(["param", "searched from"], space) + \
        "<h3>Search</h3>" + _table(["setting", "value"], general)


def _interactive(figures: list[tuple[str, Any]]) -> str:
    if not figures:
        return "<p>No figures.</p>"
    return html.plotly_figures(figures, "h3")


def _images(images: dict[str, str]) -> str:
    if not images:
        return "<p>No images were logged for this search.</p>"
    cells = [f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
             f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, data in images.items()]
    return f"<div class='grid'>{''.join(cells)}</div>"


# ------------------------------------------------------------------------------------------------ helpers
def _download_plots(client: MlflowClient, run_id: str, tmp: Path) -> Path:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a progress bar per file is noise
    if not any(a.path == PLOTS_DIR for a in client.list_artifacts(run_id)):
        return tmp  # an empty folder: nothing was logged
    return Path(client.download_artifacts(run_id, PLOTS_DIR, str(tmp)))


def _figures(history: SearchHistory, plots_dir: Path) -> list[tuple[str, Any]]:
    """The logged plotly figures, or the search figures drawn again from the history."""
    logged = plots_dir / FIGURES_FILE
    if logged.is_file():
        return [(f["title"], pio.from_json(json.dumps(f["figure"]))) for f in json.loads(logged.read_text())]
    from hpsearch.figures import plots
    from hpsearch.figures.layout import PlotsLogged
    from hpsearch.figures.visualize import search_plots

    drawn = search_plots(history, PlotsLogged())
    plots.close(drawn)
    return [(p.title, p.interactive) for p in drawn]


def _row(cells: list[Any], best: bool = False) -> str:
    return f"<tr{' class=best' if best else ''}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def _table(header: list[str], rows: list[str]) -> str:
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(rows) + "</table>"


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else "at an unknown time"

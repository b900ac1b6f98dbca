"""Draw every figure of a finished search into files: the search's own, each trial's, the best model's.

What is drawn (see :mod:`hpsearch.drawing` for where and when, and how it reaches MLflow): in ``plots/``, a PNG
per figure, all interactive figures in one ``interactive.html`` with plotly.js inline, their plotly JSON in
``figures.json`` for ``hpsearch report``, ``param_importances.json``, the best model's ``architecture.txt`` and,
where Graphviz is installed, ``architecture.png``; for each trial, ``trials/RUN_ID/loss_curve.png``. A figure
that cannot be drawn (too few trials for an importance, say) is skipped with its reason in ``plots/skipped.txt``:
plots never fail a search whose results are already tracked.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.io as pio

from hpsearch import architecture, plots
from hpsearch.drawing import FIGURES_FILE, PLOTS_DIR, TRIAL_PNG, TRIALS_DIR, BestModelFacts, PlotsLogged
from hpsearch.history import SearchHistory, TrialHistory
from hpsearch.study import rebuild_study

__all__ = ["DrawnPart", "draw_part", "draw_search_plots", "interactive_page", "search_plots", "warm_up", "write_pages"]

PNG_DPI = 100
SEARCH_FIGURES = ("learning_curves", "best_so_far", "parallel_coordinates", "param_importances")
FIGURES = (*SEARCH_FIGURES, "best_model")  # everything draw_part can draw
#: The order of the figures in ``interactive.html``, ``figures.json`` and the report.
_RANK = {name: i for i, name in enumerate(("learning_curves", "best_so_far", "parallel_coordinates",
                                            "param_importances", "best_trial_loss", "confusion_matrix",
                                            "predicted_vs_true"))}


@dataclass
class DrawnPart:
    """Some of a search's figures, drawn: their PNGs are in the folder, their plotly JSON is here."""

    figures: list[dict[str, Any]]  # {"name", "title", "figure"}
    skipped: dict[str, str]
    importances: dict[str, float]
    per_trial_s: float = 0.0


def draw_search_plots(history: SearchHistory, best: BestModelFacts | None, folder: Path,
                      already_drawn: set[str] = frozenset()) -> PlotsLogged:
    """Every figure of a search as files: ``folder/plots/`` for the search, ``folder/trials/RUN_ID/`` per trial.

    Needs neither the tracking store nor torch (it runs in the :class:`~hpsearch.drawing.Drawer`): everything
    comes in as arguments. Trials in ``already_drawn`` got their loss-curve PNG when they ended.
    """
    started = time.monotonic()
    logged = write_pages(folder, [draw_part(history, best, folder, FIGURES, already_drawn)])
    logged.draw_s = time.monotonic() - started
    return logged


def draw_part(history: SearchHistory, best: BestModelFacts | None, folder: Path, names: tuple[str, ...],
              already_drawn: set[str] = frozenset()) -> DrawnPart:
    """The figures in ``names`` (see :data:`FIGURES`): PNGs into ``folder/plots``, their plotly JSON returned.

    The trials' loss-curve PNGs not in ``already_drawn`` come with ``learning_curves``.
    """
    out = folder / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    logged = PlotsLogged()
    per_trial = _draw_trial_pngs(history, folder / TRIALS_DIR, already_drawn) if "learning_curves" in names else 0.0
    figures = search_plots(history, logged, names)
    if best is not None and "best_model" in names:
        figures += _best_model_plots(history, best, out, logged)
    for plot in figures:
        plot.png.savefig(out / f"{plot.name}.png", dpi=PNG_DPI)
    drawn = [{"name": p.name, "title": p.title, "figure": json.loads(p.interactive.to_json())} for p in figures]
    plots.close(figures)
    return DrawnPart(drawn, logged.skipped, logged.importances, per_trial)


def write_pages(folder: Path, parts: list[DrawnPart]) -> PlotsLogged:
    """The files that hold every figure at once: ``interactive.html``, ``figures.json``, the importances."""
    out = folder / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    logged = PlotsLogged(per_trial_s=max((p.per_trial_s for p in parts), default=0.0))
    for part in parts:
        logged.skipped.update(part.skipped)
        logged.importances.update(part.importances)
    figures = sorted((f for part in parts for f in part.figures), key=lambda f: _RANK.get(f["name"], len(_RANK)))
    page = interactive_page("Search plots", [(f["title"], f["figure"]) for f in figures])
    (out / "interactive.html").write_text(page)
    (out / FIGURES_FILE).write_text(json.dumps(figures))
    if logged.importances:
        (out / "param_importances.json").write_text(json.dumps(logged.importances, indent=2))
    if logged.skipped:
        (out / "skipped.txt").write_text("".join(f"{k}: {v}\n" for k, v in logged.skipped.items()))
    logged.files = sorted(f"{PLOTS_DIR}/{p.name}" for p in out.iterdir())
    return logged


def warm_up() -> None:
    """Draw two figures of a made-up three-trial search and throw them away.

    The first figures a process draws pay for loading fonts, plotly's validators and Optuna's plotting code
    (about 0.4 s): the drawer's processes pay it while the search runs, not at its end.
    """
    trials = [TrialHistory(f"trial_{i}", f"run{i}", "completed",
                           {"n_layers": "1", "units_0": str(8 * (i + 1)), "lr": str(10.0 ** -(i + 1))},
                           {key: [(1, 1.0 + i + offset), (2, 0.5 + i + offset)] for key, offset in
                            (("train_loss", 0.0), ("val_loss", 0.1))}, 1000 * i, 1000 * i + 500)
              for i in range(3)]
    space = {"space.layers": "layers(1, 2, units=(4, 64))", "space.lr": "loguniform(0.0001, 0.1)"}
    history = SearchHistory("warm-up", "warm-up", "warm-up", {**space, "metric": "val_loss", "mode": "min"}, {}, {},
                            trials)
    folder = Path(tempfile.mkdtemp(prefix="hpsearch-warm-up-"))
    try:  # the two figures whose first drawing costs most (Optuna's plots load on first use)
        draw_part(history, None, folder, ("learning_curves", "parallel_coordinates"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def interactive_page(title: str, figures: list[tuple[str, Any]]) -> str:
    """One HTML page of plotly figures, plotly.js inline once: opens without a server or a network."""
    parts = [f"<h2>{_escape(name)}</h2>" + pio.to_html(fig, full_html=False, include_plotlyjs=i == 0,
                                                        default_height="480px")
             for i, (name, fig) in enumerate(figures)]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_escape(title)}</title></head>"
            f"<body style='font-family: sans-serif'><h1>{_escape(title)}</h1>{''.join(parts)}</body></html>")


# ---------------------------------------------------------------------------------------------- figures
def _draw_trial_pngs(history: SearchHistory, folder: Path, already_drawn: set[str]) -> float:
    """Each child run's own loss-curve PNG, unless it has one already; returns the mean seconds per PNG."""
    started = time.monotonic()
    trials = [t for t in history.trials if t.curves and t.run_id not in already_drawn]
    for trial in trials:
        (folder / trial.run_id).mkdir(parents=True)
        plots.trial_loss_png(trial, str(folder / trial.run_id / TRIAL_PNG))
    return (time.monotonic() - started) / max(1, len(trials))


def search_plots(history: SearchHistory, logged: PlotsLogged,
                 names: tuple[str, ...] = SEARCH_FIGURES) -> list[plots.Plot]:
    """The figures about the whole search (no model needed); what cannot be drawn goes to ``logged.skipped``."""
    figures: list[plots.Plot] = []
    if not history.scored():
        logged.skipped["all"] = "no trial reported the search's metric"
        return figures
    if "learning_curves" in names:
        figures.append(plots.learning_curves(history))
    if "best_so_far" in names:
        figures.append(plots.best_so_far(history))
    if "parallel_coordinates" not in names and "param_importances" not in names:
        return figures
    study = rebuild_study(history)
    if not study.trials or not study.trials[0].params:
        logged.skipped["parallel_coordinates"] = "the space searches no hyperparameter"
        return figures
    if "parallel_coordinates" in names:
        figures.append(plots.parallel_coordinates(study, history.metric))
    if "param_importances" in names and len(study.trials) < 2:
        logged.skipped["param_importances"] = f"needs 2 scored trials or more, got {len(study.trials)}"
    elif "param_importances" in names:
        plot, logged.importances = plots.param_importances(study, history.metric)
        figures.append(plot)
    return figures


def _best_model_plots(history: SearchHistory, facts: BestModelFacts, out: Path,
                      logged: PlotsLogged) -> list[plots.Plot]:
    best = next((t for t in history.trials if t.run_id == history.tags.get("hpsearch.best_run_id")), None)
    best = best or history.ranked()[0]
    figures = [plots.best_trial_losses(best)]
    (out / "architecture.txt").write_text(facts.summary)
    (out / "architecture.dot").write_text(facts.dot)
    if not architecture.graph_png(facts.dot, out / "architecture.png"):
        logged.skipped["architecture.png"] = "Graphviz `dot` is not installed (apt-get install graphviz)"
    if facts.y_true is None or facts.y_pred is None:
        logged.skipped["test split"] = "no test rows"
    elif facts.task == "regression":
        figures.append(plots.predicted_vs_true(facts.y_true, facts.y_pred, history.params.get("target", "target")))
    else:
        figures.append(plots.confusion_matrix(facts.y_true, facts.y_pred, facts.classes))
    return figures


def _escape(text: str) -> str:
    import html

    return html.escape(text)

"""Draw every figure of a finished search into files: the search's own, each trial's, the best model's.

What is drawn (see :mod:`hpsearch.figures.drawing` for where and when, and how it reaches MLflow): in ``plots/``, a PNG
per figure, all interactive figures in one ``interactive.html`` with plotly.js inline, their plotly JSON in
``figures.json`` for ``hpsearch report``, ``param_importances.json``, the best model's ``architecture.txt`` and,
where Graphviz is installed, ``architecture.png``; for each of the best trials (:data:`BEST_TRIALS_DRAWN`),
``trials/RUN_ID/loss_curve.png``. A figure
that cannot be drawn (too few trials for an importance, say) is skipped with its reason in ``plots/skipped.txt``:
plots never fail a search whose results are already tracked.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from optuna.distributions import FloatDistribution, IntDistribution, distribution_to_json

from hpsearch.figures import html, plots
from hpsearch.figures.layout import FIGURES_FILE, PLOTS_DIR, TRIAL_PNG, TRIALS_DIR, BestModelFacts, PlotsLogged
from hpsearch.figures.study import rebuild_study
from hpsearch.show import DEFAULT_TOP
from hpsearch.tracking.reader import SearchHistory
from hpsearch.tracking.schema import TAG_BEST_RUN_ID, Status, TrialRecord
from hpsearch.training import architecture

__all__ = ["BEST_TRIALS_DRAWN", "draw_search_plots", "interactive_page", "search_plots", "warm_up"]

PNG_DPI = 100
#: The trials whose run gets its own loss-curve PNG: the best ones, as many as the summary lists.
BEST_TRIALS_DRAWN = DEFAULT_TOP


def draw_search_plots(history: SearchHistory, best: BestModelFacts | None, folder: Path) -> PlotsLogged:
    """Every figure of a search as files: ``folder/plots/`` for the search, ``folder/trials/RUN_ID/`` for each of
    the best trials.

    Needs neither the tracking store nor torch (it runs in the :class:`~hpsearch.figures.drawing.Drawer`): everything
    comes in as arguments.
    """
    logged = PlotsLogged()
    out = folder / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    logged.per_trial_s = draw_trial_pngs(history.ranked()[:BEST_TRIALS_DRAWN], folder / TRIALS_DIR)
    figures = search_plots(history, logged)
    if best is not None:
        figures += _best_model_plots(history, best, out, logged)
    _write(figures, out, logged)
    plots.close(figures)
    return logged


def warm_up() -> None:
    """Draw two figures of a made-up three-trial search and throw them away.

    The first figures a process draws pay for loading fonts, plotly's validators and Optuna's plotting code
    (about 0.4 s): the drawer pays it while the search runs, not at its end.
    """
    trials = [TrialRecord(f"t{i}", f"run{i}", f"trial_{i}",
                          {"n_layers": "1", "units_0": str(8 * (i + 1)), "lr": str(10.0 ** -(i + 1))},
                          Status.COMPLETED, epochs=2, metrics={"train_loss": 0.5 + i, "val_loss": 0.6 + i},
                          curves={key: [(1, 1.0 + i + offset), (2, 0.5 + i + offset)] for key, offset in
                                  (("train_loss", 0.0), ("val_loss", 0.1))}, start_ms=1000 * i, end_ms=1000 * i + 500)
              for i in range(3)]
    space = {f"space.{name}": distribution_to_json(dist) for name, dist in
             {"n_layers": IntDistribution(1, 2), "units_0": IntDistribution(4, 64, log=True),
              "units_1": IntDistribution(4, 64, log=True), "lr": FloatDistribution(1e-4, 0.1, log=True)}.items()}
    history = SearchHistory("warm-up", "warm-up", "warm-up", {**space, "metric": "val_loss", "mode": "min"}, {}, {},
                            trials)
    figures = [plots.learning_curves(history), plots.parallel_coordinates(rebuild_study(history), history.metric)]
    for plot in figures:  # the two whose first drawing costs most (Optuna's plots load on first use)
        plot.png.savefig(io.BytesIO(), format="png", dpi=PNG_DPI)
        plot.interactive.to_json()
    plots.close(figures)


def interactive_page(title: str, figures: list[tuple[str, Any]]) -> str:
    """One HTML page of plotly figures, plotly.js inline once: opens without a server or a network."""
    return html.page(title, f"<h1>{html.escape(title)}</h1>" + html.plotly_figures(figures))


# ---------------------------------------------------------------------------------------------- figures
def draw_trial_pngs(trials: list[TrialRecord], folder: Path) -> float:
    """The trials' own loss-curve PNGs, ``folder/RUN_ID/loss_curve.png``; returns the mean seconds per PNG."""
    started = time.monotonic()
    trials = [t for t in trials if t.curves]
    for trial in trials:
        (folder / trial.run_id).mkdir(parents=True, exist_ok=True)
        plots.trial_loss_png(trial, str(folder / trial.run_id / TRIAL_PNG))
    return (time.monotonic() - started) / max(1, len(trials))


def search_plots(history: SearchHistory, logged: PlotsLogged) -> list[plots.Plot]:
    """The figures about the whole search (no model needed); what cannot be drawn goes to ``logged.skipped``."""
    figures: list[plots.Plot] = []
    if not history.scored():
        logged.skipped["all"] = "no trial reported the search's metric"
        return figures
    figures.append(plots.learning_curves(history))
    figures.append(plots.best_so_far(history))
    study = rebuild_study(history)
    if not study.trials or not study.trials[0].params:
        logged.skipped["parallel_coordinates"] = "the space searches no hyperparameter"
        return figures
    figures.append(plots.parallel_coordinates(study, history.metric))
    if len(study.trials) < 2:
        logged.skipped["param_importances"] = f"needs 2 scored trials or more, got {len(study.trials)}"
    elif len({t.value for t in study.trials}) == 1:  # fANOVA has no variance to attribute, and raises
        logged.skipped["param_importances"] = f"every trial has the same {history.metric}: no importance to measure"
    else:
        try:
            plot, logged.importances = plots.param_importances(study, history.metric)
        except (RuntimeError, ValueError) as err:  # fANOVA on a degenerate study (say, one value per parameter)
            logged.skipped["param_importances"] = f"fANOVA could not be fitted: {err}"
        else:
            figures.append(plot)
    return figures


def _best_model_plots(history: SearchHistory, facts: BestModelFacts, out: Path,
                      logged: PlotsLogged) -> list[plots.Plot]:
    best = next((t for t in history.trials if t.run_id == history.tags.get(TAG_BEST_RUN_ID)), None)
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


def _write(figures: list[plots.Plot], out: Path, logged: PlotsLogged) -> None:
    for plot in figures:
        plot.png.savefig(out / f"{plot.name}.png", dpi=PNG_DPI)
    (out / "interactive.html").write_text(interactive_page("Search plots", [(p.title, p.interactive) for p in figures]))
    (out / FIGURES_FILE).write_text(json.dumps(
        [{"name": p.name, "title": p.title, "figure": json.loads(p.interactive.to_json())} for p in figures]))
    if logged.importances:
        (out / "param_importances.json").write_text(json.dumps(logged.importances, indent=2))
    if logged.skipped:
        (out / "skipped.txt").write_text("".join(f"{k}: {v}\n" for k, v in logged.skipped.items()))
    logged.files = sorted(f"{PLOTS_DIR}/{p.name}" for p in out.iterdir())

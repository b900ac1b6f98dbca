"""At the end of a search: draw the figures from what MLflow holds and log them as artifacts.

The runner calls :func:`log_search_plots` once, before it closes the parent run. Figures go to the parent run's
``plots/`` folder (a PNG per figure, all interactive figures in one ``interactive.html`` with plotly.js inline,
their plotly JSON in ``figures.json`` for ``hpsearch report``, ``param_importances.json``, the best model's
``architecture.txt`` and, where Graphviz is installed, ``architecture.png``); each child run gets
``plots/loss_curve.png``. A figure that cannot be drawn (too few trials for an importance, say) is skipped with
its reason in ``plots/skipped.txt``: plots never fail a search whose results are already tracked.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio
import torch
from mlflow import MlflowClient

from hpsearch import architecture, plots
from hpsearch.data import Split
from hpsearch.history import SearchHistory, load_search
from hpsearch.model import ModelSpec, load_model
from hpsearch.study import rebuild_study

__all__ = ["PlotsLogged", "interactive_page", "log_search_plots", "search_plots"]

PLOTS_DIR = "plots"
FIGURES_FILE = "figures.json"
PNG_DPI = 100


@dataclass
class PlotsLogged:
    """What :func:`log_search_plots` logged, and what it cost (seconds)."""

    files: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    per_trial_s: float = 0.0
    total_s: float = 0.0


def log_search_plots(client: MlflowClient, parent_run_id: str, best: Any, test: Split | None,
                     on_event: Callable[[str], None] = print) -> PlotsLogged:
    """Draw and log every figure of a finished search.

    Args:
        client: the MLflow client the search wrote with.
        parent_run_id: the search's parent run (still open).
        best: the best trial's record (``run_id``, ``model_dir``; None when its model is only in MLflow), or
            None when no trial scored.
        test: the test split, for the best model's confusion matrix or predicted-vs-true plot.
        on_event: where to say what was logged and which figure was skipped.
    """
    started = time.monotonic()
    history = load_search(client, parent_run_id)
    logged = PlotsLogged()
    with tempfile.TemporaryDirectory(prefix="hpsearch-plots-") as tmp:
        out = Path(tmp) / PLOTS_DIR
        out.mkdir()
        logged.per_trial_s = _log_trial_pngs(client, history, Path(tmp))
        figures = search_plots(history, logged)
        if best is not None:
            model_dir = best.model_dir or _download_model(client, best.run_id, Path(tmp) / "best")
            figures += _best_model_plots(history, model_dir, test, out, logged)
        _write(figures, out, logged)
        plots.close(figures)
        client.log_artifacts(parent_run_id, str(out), PLOTS_DIR)
    logged.total_s = time.monotonic() - started
    for name, reason in logged.skipped.items():
        on_event(f"plot {name} skipped: {reason}")
    on_event(f"plots: {len(logged.files)} files logged to the search run's {PLOTS_DIR}/ in {logged.total_s:.1f}s "
             f"({logged.per_trial_s * 1000:.0f} ms per trial for its loss curve)")
    return logged


def interactive_page(title: str, figures: list[tuple[str, Any]]) -> str:
    """One HTML page of plotly figures, plotly.js inline once: opens without a server or a network."""
    parts = [f"<h2>{_escape(name)}</h2>" + pio.to_html(fig, full_html=False, include_plotlyjs=i == 0,
                                                        default_height="480px")
             for i, (name, fig) in enumerate(figures)]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_escape(title)}</title></head>"
            f"<body style='font-family: sans-serif'><h1>{_escape(title)}</h1>{''.join(parts)}</body></html>")


# ---------------------------------------------------------------------------------------------- figures
def _log_trial_pngs(client: MlflowClient, history: SearchHistory, tmp: Path) -> float:
    """Each child run's own loss-curve PNG; returns the mean seconds per trial (drawing + logging)."""
    started = time.monotonic()
    trials = [t for t in history.trials if t.curves]
    for trial in trials:
        folder = tmp / "trials" / trial.run_id
        folder.mkdir(parents=True)
        plots.trial_loss_png(trial, str(folder / "loss_curve.png"))
        client.log_artifact(trial.run_id, str(folder / "loss_curve.png"), PLOTS_DIR)
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
    else:
        plot, logged.importances = plots.param_importances(study, history.metric)
        figures.append(plot)
    return figures


def _best_model_plots(history: SearchHistory, model_dir: str, test: Split | None, out: Path,
                      logged: PlotsLogged) -> list[plots.Plot]:
    best = next((t for t in history.trials if t.run_id == history.tags.get("hpsearch.best_run_id")), None)
    best = best or history.ranked()[0]
    figures = [plots.best_trial_losses(best)]
    model, spec = load_model(model_dir)
    (out / "architecture.txt").write_text(architecture.summary(model, spec))
    dot = architecture.to_dot(model, spec)
    (out / "architecture.dot").write_text(dot)
    if not architecture.graph_png(dot, out / "architecture.png"):
        logged.skipped["architecture.png"] = "Graphviz `dot` is not installed (apt-get install graphviz)"
    if test is None or len(test) == 0:
        logged.skipped["test split"] = "no test rows"
        return figures
    y_true, y_pred = _predictions(model, spec, test)
    if spec.task == "regression":
        figures.append(plots.predicted_vs_true(y_true, y_pred, history.params.get("target", "target")))
    else:
        figures.append(plots.confusion_matrix(y_true, y_pred, spec.classes))
    return figures


def _download_model(client: MlflowClient, run_id: str, into: Path) -> str:
    """The model of a trial that ended before the search was resumed: only MLflow still has it."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a progress bar per file is noise
    into.mkdir(parents=True)
    return client.download_artifacts(run_id, "model", str(into))


@torch.no_grad()
def _predictions(model: torch.nn.Module, spec: ModelSpec, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted values on a split: class indices, or the target in its own units."""
    outputs = model(torch.as_tensor(split.X)).cpu()
    if spec.task == "regression":
        scale = lambda v: np.asarray(v, dtype=float) * spec.target_std + spec.target_mean
        return scale(split.y), scale(outputs.squeeze(1).numpy())
    predicted = (outputs.squeeze(1) > 0).long() if spec.task == "binary" else outputs.argmax(1)
    return np.asarray(split.y).astype(int), predicted.numpy()


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


def _escape(text: str) -> str:
    import html

    return html.escape(text)

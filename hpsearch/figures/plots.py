"""The search's figures, each drawn twice: a PNG (matplotlib, Agg) and an interactive plotly figure.

Built from a :class:`~hpsearch.tracking.reader.SearchHistory` (what MLflow holds), never from the runner's memory, so
the report and the end of a search draw the same thing. Optuna draws what it knows best (parallel coordinates,
hyperparameter importance) on a study rebuilt from the finished trials (:mod:`hpsearch.figures.study`); the rest is
matplotlib and plotly express. No module-level pyplot state survives a call: every figure is closed by its
caller through :func:`close`.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: before pyplot is imported anywhere

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import plotly.express as px  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.importance import BaseImportanceEvaluator, FanovaImportanceEvaluator  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from hpsearch.tracking.reader import SearchHistory  # noqa: E402
from hpsearch.tracking.schema import Status, TrialRecord  # noqa: E402

__all__ = [
    "Plot", "best_so_far", "best_trial_losses", "close", "confusion_matrix", "learning_curve_series",
    "learning_curves", "parallel_coordinates", "param_importances", "predicted_vs_true", "trial_loss_png",
]

_STATUS_STYLE = {Status.COMPLETED: "-", Status.STOPPED: "--"}


@dataclass
class Plot:
    """One figure: ``name`` is its file stem (``plots/<name>.png``), ``title`` what the report shows."""

    name: str
    title: str
    png: MplFigure
    interactive: go.Figure


def close(plots: Sequence[Plot]) -> None:
    for plot in plots:
        plt.close(plot.png)


def _margins(*, left: float, bottom: float, top: float, right: float = 0.97, wspace: float | None = None) -> dict:
    """Fixed margins for a figure whose labels have a known size: a layout engine would measure every text
    first, which doubles the cost of a PNG (0.12 against 0.06 s); figures with labels from the data keep it."""
    return {"left": left, "bottom": bottom, "top": top, "right": right, "wspace": wspace}


# --------------------------------------------------------------------------------------- learning curves
def learning_curve_series(history: SearchHistory) -> dict[str, list[tuple[int, float]]]:
    """The search metric per epoch, one series per scored trial: what the learning-curve figure draws."""
    return {t.name: t.curves[history.metric] for t in history.scored()}


def learning_curves(history: SearchHistory) -> Plot:
    """Every trial's validation metric per epoch; an ``x`` where ASHA (or early stopping) stopped a trial."""
    metric, series = history.metric, learning_curve_series(history)
    status = {t.name: t.status for t in history.trials}
    best = history.ranked()[0].name if series else None
    fig, ax = plt.subplots(figsize=(8, 4.5), gridspec_kw=_margins(left=0.1, bottom=0.11, top=0.93))
    interactive = go.Figure()
    for name, points in series.items():
        epochs, values = zip(*points, strict=True)
        stopped = status[name] == Status.STOPPED
        width = 2.5 if name == best else 1
        ax.plot(epochs, values, _STATUS_STYLE.get(status[name], ":"), lw=width, alpha=0.9 if name == best else 0.6,
                label=f"{name} (best)" if name == best else None)
        if stopped:
            ax.plot(epochs[-1], values[-1], "x", color="black", ms=7)
        symbols = ["circle"] * (len(points) - 1) + ["x" if stopped else "circle"]
        interactive.add_trace(go.Scatter(
            x=epochs, y=values, name=f"{name} ({status[name]})", mode="lines+markers",
            line={"width": width * 1.5, "dash": "dash" if stopped else "solid"},
            marker={"symbol": symbols, "size": [5] * (len(points) - 1) + [11 if stopped else 5]},
        ))
    ax.plot([], [], "x", color="black", label="stopped early")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch, {len(series)} trials")
    ax.legend(loc="best", fontsize="small")
    interactive.update_layout(title=f"{metric} per epoch (x: stopped early)", xaxis_title="epoch",
                              yaxis_title=metric)
    return Plot("learning_curves", "Learning curves", fig, interactive)


def best_so_far(history: SearchHistory) -> Plot:
    """The best metric so far against the number of finished trials and against time since the search began."""
    metric, sign = history.metric, (1 if history.mode == "min" else -1)
    finished = sorted(history.scored(), key=lambda t: t.end_ms or t.start_ms)
    values = np.array([t.value(metric) for t in finished], dtype=float)
    running = sign * np.minimum.accumulate(sign * values) if len(values) else values
    numbers = np.arange(1, len(values) + 1)
    minutes = np.array([((t.end_ms or t.start_ms) - history.start_ms) / 60_000 for t in finished])
    fig, (by_trial, by_time) = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True,
                                          gridspec_kw=_margins(left=0.09, bottom=0.14, top=0.86, wspace=0.06))
    for ax, x, label in ((by_trial, numbers, "trials finished"), (by_time, minutes, "minutes since start")):
        ax.scatter(x, values, s=12, alpha=0.5, label="trial")
        ax.step(x, running, where="post", color="C3", label="best so far")
        ax.set(xlabel=label)
    by_trial.set(ylabel=metric)
    by_trial.legend(fontsize="small")
    fig.suptitle(f"best {metric} so far")
    interactive = make_subplots(rows=1, cols=2, shared_yaxes=True,
                                subplot_titles=("against trials finished", "against minutes since start"))
    names = [t.name for t in finished]
    for col, x in ((1, numbers), (2, minutes)):
        interactive.add_trace(go.Scatter(x=x, y=values, mode="markers", name="trial", text=names,
                                         showlegend=col == 1, marker={"color": "#636efa"}), row=1, col=col)
        interactive.add_trace(go.Scatter(x=x, y=running, mode="lines", line_shape="hv", name="best so far",
                                         showlegend=col == 1, line={"color": "#ef553b"}), row=1, col=col)
    interactive.update_layout(title=f"best {metric} so far", yaxis_title=metric)
    return Plot("best_so_far", "Best so far", fig, interactive)


# ------------------------------------------------------------------------------------ Optuna's own plots
def parallel_coordinates(study: optuna.Study, metric: str) -> Plot:
    """Hyperparameters against the metric, one line per trial (Optuna's plot)."""
    interactive = optuna.visualization.plot_parallel_coordinate(study, target_name=metric)
    with _optuna_matplotlib():
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target_name=metric)
    ax.figure.set_size_inches(10, 4.5)
    return Plot("parallel_coordinates", "Parallel coordinates", ax.figure, interactive)


def param_importances(study: optuna.Study, metric: str) -> tuple[Plot, dict[str, float]]:
    """fANOVA importance of every searched hyperparameter for the metric, and the numbers behind the bars."""
    importances = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    evaluator = _Computed(importances)  # the plots show these numbers rather than fitting fANOVA again
    interactive = optuna.visualization.plot_param_importances(study, evaluator=evaluator, target_name=metric)
    with _optuna_matplotlib():
        ax = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator, target_name=metric)
    ax.figure.set_size_inches(7, max(2.5, 0.4 * len(importances) + 1))
    ax.figure.set_layout_engine("constrained")
    plot = Plot("param_importances", "Hyperparameter importance (fANOVA)", ax.figure, interactive)
    return plot, {name: float(value) for name, value in importances.items()}


@contextlib.contextmanager
def _optuna_matplotlib() -> Iterator[None]:
    """Optuna's matplotlib plots switch the global style to ggplot and warn that they are experimental (and that
    an axis of one value is widened): keep all of it to the call, so the next figure looks as it should."""
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Attempting to set identical low and high", UserWarning)
        yield


class _Computed(BaseImportanceEvaluator):
    def __init__(self, importances: dict[str, float]) -> None:
        self.importances = importances

    def evaluate(self, study: optuna.Study, params: list[str] | None = None, *, target: Any = None) -> dict:
        return dict(self.importances)


# ------------------------------------------------------------------------------------------- best trial
def best_trial_losses(trial: TrialRecord) -> Plot:
    """Training against validation loss per epoch: the gap between them is where overfitting shows."""
    fig, ax = plt.subplots(figsize=(6, 3.5), gridspec_kw=_margins(left=0.12, bottom=0.14, top=0.9))
    interactive = go.Figure()
    for key in ("train_loss", "val_loss"):
        if key in trial.curves:
            epochs, values = zip(*trial.curves[key], strict=True)
            ax.plot(epochs, values, marker="o", ms=3, label=key)
            interactive.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=key))
    ax.set(xlabel="epoch", ylabel="loss", title=f"{trial.name} (best): training vs validation loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    interactive.update_layout(title=f"{trial.name} (best): training vs validation loss", xaxis_title="epoch",
                              yaxis_title="loss")
    return Plot("best_trial_loss", "Best trial: training vs validation loss", fig, interactive)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Any]) -> Plot:
    """The best model's confusion matrix on the test split (rows: true class, columns: predicted)."""
    from sklearn.metrics import ConfusionMatrixDisplay
    from sklearn.metrics import confusion_matrix as counts

    names = [str(label) for label in labels]
    matrix = counts(y_true, y_pred, labels=list(range(len(names))))
    size = min(9, 3 + 0.45 * len(names))
    fig, ax = plt.subplots(figsize=(size, size * 0.85), layout="constrained")
    ConfusionMatrixDisplay(matrix, display_labels=names).plot(ax=ax, colorbar=False, cmap="Blues")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"best model on the test split: accuracy {accuracy:.3f}")
    interactive = px.imshow(matrix, x=names, y=names, text_auto=True, color_continuous_scale="Blues",
                            labels={"x": "predicted", "y": "true", "color": "count"},
                            title=f"Confusion matrix on the test split (accuracy {accuracy:.3f})")
    interactive.update_xaxes(type="category")
    interactive.update_yaxes(type="category")
    return Plot("confusion_matrix", "Best model: confusion matrix (test split)", fig, interactive)


def predicted_vs_true(y_true: np.ndarray, y_pred: np.ndarray, target: str = "target") -> Plot:
    """The best model's predictions on the test split against the true values; the diagonal is perfect."""
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    rmse = float(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    fig, ax = plt.subplots(figsize=(5, 5), gridspec_kw=_margins(left=0.15, bottom=0.11, top=0.93))
    ax.scatter(y_true, y_pred, s=12, alpha=0.6)
    ax.plot([low, high], [low, high], color="C3", lw=1, label="predicted = true")
    ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title=f"test split: RMSE {rmse:.4g}")
    ax.legend()
    interactive = px.scatter(x=y_true, y=y_pred, labels={"x": f"true {target}", "y": f"predicted {target}"},
                             title=f"Predicted vs true on the test split (RMSE {rmse:.4g})")
    interactive.add_shape(type="line", x0=low, y0=low, x1=high, y1=high, line={"color": "red", "width": 1})
    return Plot("predicted_vs_true", "Best model: predicted vs true (test split)", fig, interactive)


# -------------------------------------------------------------------------------------------- per trial
def trial_loss_png(trial: TrialRecord, path: str) -> None:
    """A small training vs validation loss PNG for one child run: cheap, since every trial gets one."""
    keys = tuple(key for key in ("train_loss", "val_loss") if key in trial.curves)
    canvas = _trial_canvas(keys)
    for key, line in canvas.lines.items():
        line.set_data(*zip(*trial.curves[key], strict=True))
    canvas.ax.set_title(f"{trial.name} ({trial.status})", fontsize="medium")
    canvas.ax.relim()
    canvas.ax.autoscale_view()
    canvas.fig.savefig(path)


@dataclass
class _TrialCanvas:
    fig: MplFigure
    ax: Any
    lines: dict[str, Any]


@functools.cache
def _trial_canvas(keys: tuple[str, ...]) -> _TrialCanvas:
    """One figure per process for every trial's PNG, its lines replaced each time: a new figure per trial costs
    40 % more (52 against 32 ms a PNG), and a search draws one per trial. No pyplot: nothing global to close.
    Fixed margins: a layout engine would double the cost."""
    fig = MplFigure(figsize=(4, 2.6), dpi=72)
    fig.subplots_adjust(left=0.17, right=0.97, bottom=0.17, top=0.89)
    ax = fig.add_subplot()
    lines = {key: ax.plot([], [], marker="o", ms=2, label=key)[0] for key in keys}
    ax.set(xlabel="epoch", ylabel="loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if lines:
        ax.legend(fontsize="small")
    return _TrialCanvas(fig, ax, lines)

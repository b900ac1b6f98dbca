"""When a search's figures are drawn, and how they reach MLflow.

Once the trials have ended, :func:`start_search_plots` reads the search back from MLflow, computes what the
figures need from the best model (predictions, the architecture, with the torch the driver has loaded) and draws
every figure (:mod:`hpsearch.figures.visualize` says what is drawn) here, in the driver; :meth:`PendingPlots.log` logs
the files before the parent run is closed. Drawing costs about a second per search plus tens of milliseconds per
trial. (An earlier design drew them in a forked process of its own while the search ran; measured side by side
in ``bench/machinery.py``, it did not pay: docs/benchmarks.md.)
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hpsearch.data.dataset import Split
from hpsearch.figures.layout import PLOTS_DIR, TRIAL_PNG, TRIALS_DIR, BestModelFacts, PlotsLogged
from hpsearch.model.network import ModelSpec, load_model
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.reader import load_search
from hpsearch.training import architecture

if TYPE_CHECKING:
    from hpsearch.tracking.store import Store

__all__ = ["PendingPlots", "best_model_facts", "start_search_plots"]


def best_model_facts(model_dir: str, test: Split | None) -> BestModelFacts:
    """The best model's architecture (text and Graphviz source) and its predictions on the test split."""
    model, spec = load_model(model_dir)
    facts = BestModelFacts(architecture.summary(model, spec), architecture.to_dot(model, spec), spec.task,
                           list(spec.classes))
    if test is not None and len(test) > 0:
        facts.y_true, facts.y_pred = _predictions(model, spec, test)
    return facts


@torch.no_grad()
def _predictions(model: torch.nn.Module, spec: ModelSpec, split: Split) -> tuple[np.ndarray, np.ndarray]:
    outputs = model(torch.as_tensor(split.X)).cpu()
    if spec.task == "regression":
        scale = lambda v: np.asarray(v, dtype=float) * spec.target_std + spec.target_mean
        return scale(split.y), scale(outputs.squeeze(1).numpy())
    predicted = (outputs.squeeze(1) > 0).long() if spec.task == "binary" else outputs.argmax(1)
    return np.asarray(split.y).astype(int), predicted.numpy()


@dataclass
class PendingPlots:
    """A search's figures, drawn into ``folder``, not yet logged."""

    parent_run_id: str
    folder: Path
    runs: list[str]
    started: float
    drawn: PlotsLogged

    def log(self, store: Store, on_event: Callable[[str], None] = print) -> PlotsLogged:
        """Log the files to the runs, and say what was logged or skipped.

        ``on_event`` gets these lines as details (the command line shows them with ``--verbose`` only): a
        figure skipped for a reason that is no mistake (Graphviz not installed, too few trials) is said on
        every search otherwise, and ``report`` says it where it matters.
        """
        try:
            logged = self.drawn
            files = [(run_id, str(png), PLOTS_DIR) for run_id in self.runs
                     if (png := self.folder / TRIALS_DIR / run_id / TRIAL_PNG).exists()]
            store.call(tracking.log_files, [*files, (self.parent_run_id, str(self.folder / PLOTS_DIR), PLOTS_DIR)])
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        logged.total_s = time.monotonic() - self.started
        for name, reason in logged.skipped.items():
            on_event(f"plot {name} skipped: {reason}")
        on_event(f"plots: {len(logged.files)} files logged to the search run's {PLOTS_DIR}/ in {logged.total_s:.1f}s "
                 f"at the end of the search ({logged.per_trial_s * 1000:.0f} ms per trial for its loss curve)")
        return logged


def start_search_plots(store: Store, parent_run_id: str, best: Any, test: Split | None) -> PendingPlots:
    """Read the finished search back from MLflow and draw its figures into a new temporary folder.

    Args:
        store: the tracking store the search wrote to.
        parent_run_id: the search's parent run (still open).
        best: the best trial's record (``run_id``, ``model_dir``; None when its model is only in MLflow), or
            None when no trial scored.
        test: the test split, for the best model's confusion matrix or predicted-vs-true plot.
    """
    started = time.monotonic()
    history = store.call(load_search, parent_run_id)
    folder = Path(tempfile.mkdtemp(prefix="hpsearch-plots-"))
    try:
        facts = None
        if best is not None:
            model_dir = best.model_dir or store.call(tracking.download_model, best.run_id, folder / "best")
            facts = best_model_facts(model_dir, test)
        from hpsearch.figures import visualize  # matplotlib, plotly and Optuna's plots: only where figures are drawn

        drawn = visualize.draw_search_plots(history, facts, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return PendingPlots(parent_run_id, folder, [t.run_id for t in history.trials], started, drawn)

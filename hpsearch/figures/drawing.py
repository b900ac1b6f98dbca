"""Where and when a search's figures are drawn, and how they reach MLflow.

Drawing costs about a second per search plus tens of milliseconds per loss-curve PNG, all of it Python
(matplotlib's layout and rendering; :mod:`hpsearch.figures.visualize` says what is drawn). A PNG per trial would
cost a 1,000-trial search more than its trials, for figures nobody opens: the MLflow UI charts every run's
metrics already. So the figures are drawn once the trials have ended: the search's own, and a loss-curve PNG for
the best few trials (the ones the summary lists; ``hpsearch report`` draws those of the trials it shows).

The runner starts a :class:`Drawer`, a second process, when a search starts, so that matplotlib, plotly and
Optuna's plotting code load while the trials train; once they have ended, :func:`start_search_plots` hands it the
search (its runs read back from MLflow, the curves the driver already holds), the runner publishes the best
model meanwhile, and :meth:`PendingPlots.log` logs the files before the parent run is closed. The driver never
imports matplotlib or plotly; what the figures need from the best model (predictions, the architecture) it
computes itself, with the torch it has loaded.

The drawer is forked, so it starts with the driver's imports already done, and only where forking is safe:
before Ray runs in this process (a fork would copy Ray's threads in an unknown state). Elsewhere (a library
caller that already started Ray, ``hpsearch report``) the same drawing runs in-process.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hpsearch import lifeline
from hpsearch.data.dataset import Split
from hpsearch.figures.layout import PLOTS_DIR, TRIAL_PNG, TRIALS_DIR, BestModelFacts, PlotsLogged
from hpsearch.loading import imports_without_gc
from hpsearch.model.network import ModelSpec, load_model
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.reader import load_search
from hpsearch.training import architecture

if TYPE_CHECKING:
    from hpsearch.tracking.store import Store

__all__ = ["Drawer", "PendingPlots", "best_model_facts", "start_search_plots"]


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
        truth = np.asarray(split.y, dtype=float) * spec.target_std + spec.target_mean
        return truth, spec.to_units(outputs.squeeze(1).double().numpy())
    predicted = (outputs.squeeze(1) > 0).long() if spec.task == "binary" else outputs.argmax(1)
    return np.asarray(split.y).astype(int), predicted.numpy()


class Drawer:
    """A forked process that draws the figures while the driver goes on, and the folder it draws into.

    It ignores Ctrl-C (the driver decides what an interruption means) and ends with the driver, even a killed one
    (:mod:`hpsearch.lifeline`); :meth:`close` ends it and removes the folder. Create it with :meth:`start`, which
    returns None where forking is not safe.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="hpsearch-plots-"))
        # One process: a second one (the search's figures in two halves at once) finished the figures sooner but
        # slowed the search more, on 2 cores, than it saved (bench: tiny search 8.5 s against 7.9 s).
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
                                         initargs=(os.getpid(),))
        self._pool.submit(bool)  # fork now, so that it loads the plotting libraries while the search runs

    @classmethod
    def start(cls) -> Drawer | None:
        ray = sys.modules.get("ray")
        if os.name != "posix" or (ray is not None and ray.is_initialized()):
            return None
        sys.stdout.flush(), sys.stderr.flush()  # nothing buffered is written twice
        return cls()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        """End the process once its current figure is done (figures not started are dropped); remove the folder."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def _start_worker(driver: int) -> None:
    # A killed driver does not close the pool, and the worker's own copy of its queue's pipe keeps it waiting.
    lifeline.exit_with_parent(driver)
    for stop in (signal.SIGINT, signal.SIGTERM):  # the driver ends it, however the driver is stopped
        signal.signal(stop, signal.SIG_IGN)
    with imports_without_gc():
        from hpsearch.figures import visualize  # matplotlib, plotly and Optuna's plots, loaded while the search runs

        visualize.warm_up()


@dataclass
class PendingPlots:
    """Figures being drawn (by a :class:`Drawer`, or already drawn in-process) into ``folder``, not yet logged."""

    parent_run_id: str
    folder: Path
    runs: list[str]
    started: float
    args: tuple  # what draw_search_plots needs, to draw everything here if the drawer dies
    owns_folder: bool = True  # False: the drawer's folder, which the drawer removes
    figures: Future | None = None  # the search's figures, in the drawer
    drawn: PlotsLogged | None = None  # already drawn, in-process

    def log(self, store: Store, on_event: Callable[[str], None] = print) -> PlotsLogged:
        """Wait for the drawing, log the files to the runs, and say what was logged or skipped.

        ``on_event`` gets these lines as details (the command line shows them with ``--verbose`` only): a
        figure skipped for a reason that is no mistake (Graphviz not installed, too few trials) is said on
        every search otherwise, and ``report`` says it where it matters.
        """
        try:
            logged = self.drawn or self._wait()
            files = [(run_id, str(png), PLOTS_DIR) for run_id in self.runs
                     if (png := self.folder / TRIALS_DIR / run_id / TRIAL_PNG).exists()]
            store.call(tracking.log_files, [*files, (self.parent_run_id, str(self.folder / PLOTS_DIR), PLOTS_DIR)])
        finally:
            if self.owns_folder:
                shutil.rmtree(self.folder, ignore_errors=True)
        logged.total_s = time.monotonic() - self.started
        for name, reason in logged.skipped.items():
            on_event(f"plot {name} skipped: {reason}")
        on_event(f"plots: {len(logged.files)} files logged to the search run's {PLOTS_DIR}/ in {logged.total_s:.1f}s "
                 f"at the end of the search ({logged.per_trial_s * 1000:.0f} ms per best trial's loss curve)")
        return logged

    def _wait(self) -> PlotsLogged:
        assert self.figures is not None
        try:
            return self.figures.result()
        except BrokenProcessPool:  # the drawer died (killed, out of memory): draw everything here instead
            return _draw_again(*self.args)


def start_search_plots(store: Store, parent_run_id: str, best: Any, test: Split | None,
                       drawer: Drawer | None = None,
                       curves: dict[str, dict[str, list[tuple[int, float]]]] | None = None) -> PendingPlots:
    """Read the finished search back from MLflow and start drawing its figures (in ``drawer`` if given).

    Args:
        store: the tracking store the search wrote to.
        parent_run_id: the search's parent run (still open).
        best: the best trial's record (``run_id``, ``model_dir``; None when its model is only in MLflow), or
            None when no trial scored.
        test: the test split, for the best model's confusion matrix or predicted-vs-true plot.
        drawer: the process to draw in; None draws here and now, into a new temporary folder.
        curves: run id -> the metrics per epoch, for the runs whose every epoch the caller wrote (the tracker's
            :meth:`~hpsearch.tracking.tracker.TrialTracker.curves`): not read back, a call per run and metric.
    """
    started = time.monotonic()
    history = store.call(load_search, parent_run_id, curves=curves)
    folder = drawer.folder if drawer else Path(tempfile.mkdtemp(prefix="hpsearch-plots-"))
    facts = None
    if best is not None:
        model_dir = best.model_dir or store.call(tracking.download_model, best.run_id, folder / "best")
        facts = best_model_facts(model_dir, test)
    runs = [t.run_id for t in history.trials]
    args = (history, facts, folder)
    pending = PendingPlots(parent_run_id, folder, runs, started, args, owns_folder=drawer is None)
    if drawer is None:
        pending.drawn = _draw(*args)
        return pending
    try:
        pending.figures = drawer.submit(_draw, *args)
    except BrokenProcessPool:  # the drawer died before the end of the search
        pending.drawn = _draw_again(*args)
    return pending


def _draw(*args: Any) -> PlotsLogged:
    from hpsearch.figures import visualize  # matplotlib, plotly and Optuna's plots: only where figures are drawn

    return visualize.draw_search_plots(*args)


def _draw_again(history: Any, facts: BestModelFacts | None, folder: Path) -> PlotsLogged:
    """Every figure, here, into a folder emptied of what a dead drawer may have left half-written."""
    shutil.rmtree(folder / PLOTS_DIR, ignore_errors=True)
    shutil.rmtree(folder / TRIALS_DIR, ignore_errors=True)
    return _draw(history, facts, folder)

"""Where a search's figures go (the parent run's ``plots/`` artifacts, each trial's ``loss_curve.png``) and the
records passed between the search's end (:mod:`~hpsearch.figures.drawing`) and the drawing
(:mod:`~hpsearch.figures.visualize`). Plain data: it loads without matplotlib, plotly or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FIGURES_FILE", "PLOTS_DIR", "TRIALS_DIR", "TRIAL_PNG", "BestModelFacts", "PlotsLogged"]

PLOTS_DIR = "plots"


TRIALS_DIR = "trials"


FIGURES_FILE = "figures.json"


TRIAL_PNG = "loss_curve.png"


@dataclass
class PlotsLogged:
    """What was drawn and logged, and what it cost (seconds)."""

    files: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    per_trial_s: float = 0.0
    total_s: float = 0.0


@dataclass
class BestModelFacts:
    """What the best model's figures need, computed where torch and the model are: the figures need neither."""

    summary: str
    dot: str
    task: str
    classes: list[Any]
    y_true: np.ndarray | None = None  # on the test split: class indices, or the target in its own units
    y_pred: np.ndarray | None = None

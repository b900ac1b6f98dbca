"""What a search reports back to the command line once its trials are over: its trials, its best one and why it
ended (:func:`hpsearch.execution.search.run_search` returns it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpsearch.execution.stopping import TRIALS
from hpsearch.tracking.schema import (
    ENSEMBLE_PREFIX,
    REFIT_PREFIX,
    TREE_PREFIX,
    Status,
    TrialRecord,
    rank,
    tested_models,
)

if TYPE_CHECKING:
    from hpsearch.results.ensemble import Ensemble

__all__ = ["SearchOutcome"]


@dataclass
class SearchOutcome:
    """What a finished search reports back to the command line."""

    experiment: str
    parent_run_id: str
    tracking_uri: str
    metric: str
    mode: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    test_metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    warnings: dict[str, str] = field(default_factory=dict)  # a step after the trials that failed -> its error
    experiment_id: str = ""
    end_reason: str = TRIALS  # why the search ended: trials, time budget, patience, goal
    ended_because: str = ""  # the same, in words
    time_used_s: float = 0.0  # from the command's start to the trials' end
    time_budget_s: float | None = None
    ensemble: Ensemble | None = None  # the ensemble of trials the search chose
    refit: Ensemble | None = None  # the published model refit on train + validation rows (refit=)
    tree: dict[str, float] = field(default_factory=dict)  # the default tree's test metrics (results/baseline)

    def time_figures(self) -> dict[str, float]:
        """What the parent run records of the search's time: its budget, and how much of it the trials used."""
        if self.time_budget_s is None:
            return {}
        return {"time_budget_s": self.time_budget_s, "time_budget_used_s": self.time_used_s}

    def counts(self) -> dict[str, int]:
        statuses = [t.status for t in self.trials]
        return {s.value: statuses.count(s) for s in Status if s != Status.RUNNING}

    def ranked(self) -> list[TrialRecord]:
        """Trials that ended with a model and a value for the metric, best first (a failed trial is never best)."""
        return rank(self.trials, self.metric, self.mode)

    def tested(self) -> list[tuple[str, str, dict[str, float]]]:
        """The best trial, the ensemble and the default tree on the test split, as ``best`` reads them back."""
        metrics = {f"best_{k}": v for k, v in self.test_metrics.items()}  # as the parent run records them
        for chosen, prefix in ((self.ensemble, ENSEMBLE_PREFIX), (self.refit, REFIT_PREFIX)):
            if chosen is not None:
                metrics |= {f"{prefix}{k}": v for k, v in chosen.metrics.items()}
                metrics[f"{prefix}size"] = len(chosen.members)
        metrics |= {f"{TREE_PREFIX}{k}": v for k, v in self.tree.items()}
        return tested_models(metrics, self.best.name if self.best else None)

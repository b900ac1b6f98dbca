"""What a search continues from: its own earlier runs (``resume``), or another search's trials (``warm_start``).

A resume continues the latest search of the experiment, interrupted or finished, under the same parent run: it is
checked before any data is loaded (:func:`check_resume`: nothing to resume, fewer trials than it has, another
process running it), then claimed for this process (:func:`reopen`). It keeps the settings the search started
with; ``--num-samples`` and ``--time-budget`` ask for more (trials in all, or time). A warm start seeds a new
search's searcher with the finished trials of another search whose values fit this search's space
(:func:`warm_start`). Nothing is written before these checks pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hpsearch.errors import HpsearchError, SpaceError
from hpsearch.execution import restore as ray_state
from hpsearch.execution.sampling import search_distributions
from hpsearch.space import Search
from hpsearch.tracking import lease, resumed
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.connection import check_store_exists, experiment_id
from hpsearch.tracking.reader import ResumableSearch, search_trials
from hpsearch.tracking.schema import ENDED, TAG_RAY_FIRST_TRIAL, TAG_WARM_START, TrialRecord
from hpsearch.tracking.store import Store
from hpsearch.tracking.study import as_optuna_trial

__all__ = ["Resumed", "asked_of", "check_resume", "reopen", "warm_source", "warm_start"]


def asked_of(search: Search) -> dict[str, Any]:
    """What a session asks for, as its session param records it (a later plain ``resume`` asks the same)."""
    return {"num_samples": search.num_samples, "time_budget": search.time_budget}


def check_resume(store: Store, tracking_uri: str | None, experiment: str, search: Search,
                 asked: dict[str, Any]) -> tuple[Search, ResumableSearch]:
    """The search to continue, checked before any data is loaded (read-only), and ``search`` with the settings
    it continues with: those it started with, the latest session's ``num_samples`` and ``time_budget``, and what
    this resume ``asked`` for (``num_samples``: trials in all; ``time_budget`` alone: trials until it is spent).
    """
    check_store_exists(tracking_uri)
    store.connect()
    exp_id = store.call(experiment_id, experiment, store.uri, create=False)
    previous = store.call(resumed.find_resumable_search, exp_id, experiment, num_samples=asked.get("num_samples"),
                          more=bool(asked), claimant=os.getpid())
    return _as_started(search, previous, asked), previous


def _as_started(search: Search, previous: ResumableSearch, asked: dict[str, Any]) -> Search:
    """The search with the settings it started with (a resume must not change them), the latest session's
    ``num_samples`` and ``time_budget``, then what this resume asked for."""
    params = previous.params
    latest = {**{k: _number(params.get(k)) for k in ("num_samples", "time_budget")}, **previous.asked}
    if "num_samples" in asked:
        num_samples = asked["num_samples"]
    else:
        num_samples = None if "time_budget" in asked else latest["num_samples"]
    budget = asked.get("time_budget", latest["time_budget"])
    resources = {"cpu": float(params["cpus_per_trial"]), "gpu": float(params["gpus_per_trial"])}
    return search.replace(clear=("num_samples", "time_budget", "patience", "goal"), num_samples=num_samples,
                          time_budget=budget,
                          max_epochs=int(params["max_epochs"]), seed=int(params["seed"]), searcher=params["searcher"],
                          resources=resources, executor=previous.executor,
                          patience=_number(params.get("patience")), goal=_number(params.get("goal")))


def _number(text: str | None) -> Any:
    """A parent run's param read back: an int, a float, or None (absent, or ``"None"``)."""
    if text is None or text == "None":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


class Resumed:
    """A search reopened by this process: its parent run, its tracker, and where its Ray trials continue."""

    def __init__(self, previous: ResumableSearch, tracker: tracking.TrialTracker) -> None:
        self.previous, self.tracker = previous, tracker
        self.ray_path = previous.ray_experiment
        self.restore = False  # whether Ray Tune's saved state continues the search's unfinished trials
        self.new_path = self.ray_path  # where a new Tuner runs the trials it needs beyond that

    @property
    def run_id(self) -> str:
        return self.previous.run_id


def reopen(store: Store, exp_id: str, experiment: str, search: Search, asked: dict[str, Any],
           on_event: Callable[[str], None], *, on_ray: bool) -> Resumed:
    """Claim the search for this process and reopen it: its trials read back, those that did not end to run
    again; on Ray, its saved state mended for Ray Tune's restore, the runs Ray never knew deleted."""
    previous = store.call(resumed.reopen_search, exp_id, experiment, lease.me(asked_of(search)),
                          num_samples=asked.get("num_samples"), more=bool(asked))
    try:
        reopened = _reopened(store, exp_id, previous, search, on_event, on_ray=on_ray)
    except BaseException as err:  # the search is closed again, its lease released, as an interrupted search's
        store.call(tracking.abort_search_run, previous.run_id, "", killed=isinstance(err, KeyboardInterrupt),
                   session=previous.session)
        raise
    tracker = reopened.tracker
    ended = sum(r.status in ENDED for r in tracker.records.values())
    again = len(tracker.records) - ended
    total = f"of {search.num_samples} " if search.num_samples is not None else ""
    on_event(f"resuming search {previous.run_id} in experiment {experiment!r}: {ended} {total}trials already "
             "ended and are kept" + (f", {again} to finish" if again else ""))
    return reopened


def _reopened(store: Store, exp_id: str, previous: ResumableSearch, search: Search,
              on_event: Callable[[str], None], *, on_ray: bool) -> Resumed:
    """The claimed search's trials read back; on Ray, what a kill left in Ray's saved state mended."""
    tracker = tracking.TrialTracker.resume(store, exp_id, previous.run_id, search.max_epochs)
    reopened = Resumed(previous, tracker)
    if on_ray:
        ray_path = reopened.ray_path
        cut = ray_state.set_aside_cut_saves(ray_path)
        if cut:
            on_event(f"Ray Tune's latest save of this search was cut short by the kill ({', '.join(cut)}, kept "
                     "with a .cut suffix): it resumes from its save before that one, or starts the trials afresh")
        _keep_trials_ray_knows(tracker, ray_path, int(previous.tags.get(TAG_RAY_FIRST_TRIAL, 0)))
        restorable = ray_state.restorable(ray_path)
        reopened.restore = restorable and not previous.finished
        if restorable:  # trials beyond what Ray saved run in a new folder, beside it
            reopened.new_path = f"{ray_path}-{previous.session}"
    return reopened


def _keep_trials_ray_knows(tracker: tracking.TrialTracker, ray_path: str, first_trial: int) -> None:
    """Delete the runs of the trials that Ray's last snapshot does not know (opened in the instant before a kill).

    Ray proposes those trials again, and each trial must have exactly one run. The trials before ``first_trial``
    ran in an earlier folder (a search continued with more trials): they are kept. When Ray saved nothing
    (killed at its start, or its folder deleted), the trials that ended are kept and the others' runs go: a new
    Tuner runs the trials the search still needs.
    """
    if ray_state.restorable(ray_path):
        from ray.tune import ExperimentAnalysis

        known = {t.trial_id for t in ExperimentAnalysis(ray_path).trials}
        tracker.forget({trial_id for trial_id, record in tracker.records.items()
                        if trial_id not in known and resumed.trial_number(record.name) >= first_trial})
    else:  # the trials that ended stay: a new Tuner runs the others
        tracker.forget({trial_id for trial_id, record in tracker.records.items() if record.status not in ENDED})


def warm_start(store: Store, tracking_uri: str | None, search: Search, metric: str,
               on_event: Callable[[str], None], *, source: str | None = None) -> tuple[str | None, list[TrialRecord]]:
    """The finished trials of the search ``warm_start`` names (an experiment's latest, or a parent run's id)
    whose values fit this search's space: its run id and those trials. Says how many were used; a search that
    shares nothing, or none found, is an error (``SpaceError`` on ``warm_start``), before anything is written.
    ``source``: a parent run id recorded by an earlier session of this search (a resume reads it again, quietly).
    """
    name = source or search.warm_start
    if name is None:
        return None, []
    try:
        check_store_exists(tracking_uri)
        store.connect()
        run_id, experiment, records = store.call(search_trials, name)
    except HpsearchError as err:  # no store, no such experiment or search
        if source is not None:
            return None, []
        raise SpaceError(str(err), field="warm_start") from None
    distributions = search_distributions(search)
    finished = [r for r in records if r.status in ENDED]
    used = [r for r in finished if as_optuna_trial(r, distributions, metric, fill=False) is not None]
    if source is None and not used:
        raise SpaceError(f"none of the {len(finished)} ended trials of search {run_id} (experiment {experiment!r}) "
                         f"fits this search's space and metric {metric!r}: they share nothing", field="warm_start")
    if source is None:
        skipped = len(finished) - len(used)
        on_event(f"warm start from search {run_id} of experiment {experiment!r}: the searcher is told {len(used)} "
                 f"of its {len(finished)} ended trials" + (f" ({skipped} outside this space)" if skipped else ""))
    return run_id, used


def warm_source(previous: ResumableSearch) -> str | None:
    """The parent run id a search was warm-started from, as its parent run records it."""
    return previous.tags.get(TAG_WARM_START)

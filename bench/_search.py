"""One hpsearch search, as ``python -m hpsearch run`` runs it, plus the figures the benchmark needs.

    python bench/_search.py OUT.json SPACE_FILE [hpsearch run options] [--no-tracking] [--lever NAME]

Runs :func:`hpsearch.cli.main` in this process (so the wall time measured outside includes every import and
start-up, as for a user), and writes to OUT.json: the time spent in MLflow client calls (and apart: opening the
store, publishing the best model), the driver's peak and
sampled resident memory, the best validation metric, and each trial's config and epochs (for the ideal time).
``--no-tracking`` replaces the MLflow client by one that does nothing; ``--lever`` undoes one optimisation
(driver-side only) to measure what it pays.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import uuid
from types import SimpleNamespace

LEVERS = ("tune-loggers-on", "no-reuse-actors", "checkpoint-keep-all", "checkpoint-keep-4", "no-concurrency-limit",
          "heavy-worker-imports")


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _NullClient:
    """An MLflow client that records nothing: tracking off."""

    tracking_uri = "null://"

    def create_run(self, *args, **kwargs):
        return SimpleNamespace(info=SimpleNamespace(run_id=uuid.uuid4().hex))

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, *args, **kwargs):
        return "0"

    def search_runs(self, *args, **kwargs):
        return []

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _TimedClient:
    """Forwards to the real client and adds up the seconds spent in its calls."""

    def __init__(self, client):
        self._client, self.seconds, self.calls = client, 0.0, 0

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


def main(argv: list[str]) -> int:
    out, args = argv[0], list(argv[1:])
    tracking_off = "--no-tracking" in args
    args = [a for a in args if a != "--no-tracking"]
    lever = None
    if "--lever" in args:
        at = args.index("--lever")
        lever = args[at + 1]
        del args[at : at + 2]
        assert lever in LEVERS, lever
    if lever == "tune-loggers-on":
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"

    from hpsearch import tracking

    timed: list[_TimedClient] = []
    real_connect = tracking.connect

    seconds = {"connect_s": 0.0, "publish_s": 0.0}

    def connect(uri):
        if tracking_off:
            return _NullClient(), "null://"
        start = time.perf_counter()
        client, uri = real_connect(uri)
        seconds["connect_s"] += time.perf_counter() - start
        timed.append(_TimedClient(client))
        return timed[-1], uri

    tracking.connect = connect
    from hpsearch import publish

    if tracking_off:  # nothing to publish the best model into
        publish.on_search_end = lambda *a, **k: None
    else:  # the best model's pyfunc packaging and registration, apart from the per-trial tracking calls
        real_publish = publish.on_search_end

        def on_search_end(*a, **k):
            start = time.perf_counter()
            try:
                return real_publish(*a, **k)
            finally:
                seconds["publish_s"] += time.perf_counter() - start

        publish.on_search_end = on_search_end
    samples: list[float] = []
    real_ended = tracking.TrialTracker.trial_ended

    def trial_ended(self, *a, **k):
        record = real_ended(self, *a, **k)
        samples.append(_rss_mb())
        return record

    tracking.TrialTracker.trial_ended = trial_ended
    outcomes = []
    from hpsearch import runner

    real_run = runner.run_search

    def run_search(*a, **k):
        outcomes.append(real_run(*a, **k))
        return outcomes[-1]

    runner.run_search = run_search
    _apply_lever(lever)
    from hpsearch.cli import main as cli_main

    code = cli_main(["run", *args])
    outcome = outcomes[-1] if outcomes else None
    result = {
        "code": code,
        "tracking_s": sum(c.seconds for c in timed),
        **seconds,
        "tracking_calls": sum(c.calls for c in timed),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "driver_cpu_s": _cpu_s(),
        "rss_after_trials_mb": samples,
        "search_wall_s": outcome.wall_s if outcome else None,
        "metric": outcome.metric if outcome else None,
        "best": outcome.best.metrics[outcome.metric] if outcome and outcome.best else None,
        "best_val_accuracy": outcome.best.metrics.get("val_accuracy") if outcome and outcome.best else None,
        "trials": [{"params": t.params, "epochs": t.epochs, "status": t.status} for t in outcome.trials]
        if outcome else [],
    }
    with open(out, "w") as handle:
        json.dump(result, handle, default=str)
    return code


def _apply_lever(lever: str | None) -> None:
    """Undo one driver-side optimisation of the Ray executor (patching Ray Tune's config classes)."""
    if lever in (None, "tune-loggers-on"):
        return
    from ray import tune

    if lever in ("no-reuse-actors", "no-concurrency-limit"):
        real = tune.TuneConfig
        undone = {"reuse_actors": False} if lever == "no-reuse-actors" else {"max_concurrent_trials": None}

        def tune_config(*a, **k):
            return real(*a, **{**k, **undone})

        tune.TuneConfig = tune_config
    elif lever == "heavy-worker-imports":  # the trainable as it was: a function whose module loads everything
        from hpsearch import runner

        runner.ray_trial = _heavy_trial
    elif lever == "checkpoint-keep-all":  # no num_to_keep: Ray then skips the forced snapshot per checkpoint
        real_checkpoint = tune.CheckpointConfig
        tune.CheckpointConfig = lambda *a, **k: real_checkpoint()
    elif lever == "checkpoint-keep-4":  # 4 checkpoints kept per trial: a forced snapshot every 4th epoch
        real_keep = tune.CheckpointConfig
        tune.CheckpointConfig = lambda *a, **k: real_keep(num_to_keep=4)


def _heavy_trial(config, data, settings):
    """Pickled by value (it lives in ``__main__``): the worker imports what the runner imports, then trains."""
    import hpsearch.runner  # noqa: F401 - MLflow, scikit-learn, pandas: what a worker loaded before hpsearch.trial
    from hpsearch.trial import ray_trial

    ray_trial(config, data, settings)


if __name__ == "__main__":
    from hpsearch.cli import exit_process

    exit_process(main(sys.argv[1:]))  # exits as `python -m hpsearch` does

"""One hpsearch search, as ``python -m hpsearch run`` runs it, plus the figures the benchmark needs.

    python bench/_search.py OUT.json SPACE_FILE [hpsearch run options] [--no-tracking] [--lever NAME]

Runs :func:`hpsearch.cli.main` in this process (so the wall time measured outside includes every import and
start-up, as for a user), and writes to OUT.json: the time the driver waits on the tracking store's calls (and
apart: opening the store, publishing the best model), the CPU time of the store's own process, the driver's peak
and sampled resident memory, the best validation metric, and each trial's config and epochs (for the ideal time).
``--no-tracking`` replaces the store by one that does nothing (no MLflow anywhere); ``--lever`` undoes one
optimisation (driver-side only) to measure what it pays.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import uuid
from pathlib import Path

from hpsearch.tracking.store import Store  # no MLflow, no torch: the CLI's import order is kept

LEVERS = ("tune-loggers-on", "no-reuse-actors", "checkpoint-keep-all", "checkpoint-keep-4", "no-concurrency-limit",
          "heavy-worker-imports", "prestart-workers", "tune-usage-tag", "rmsprop-torch-optim")


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _NullStore(Store):
    """A tracking store that records nothing (tracking off): no MLflow anywhere, no process of its own."""

    uri = "null://"
    _ANSWERS = {"experiment_id": lambda: "0", "start_search_run": lambda: uuid.uuid4().hex,
                "_open_trial_run": lambda: uuid.uuid4().hex, "on_search_end": list, "trial_records": list}

    def connect(self):
        return self.uri

    def call(self, fn, *args, **kwargs):
        return self._ANSWERS.get(fn.__name__, lambda: None)()


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed_store(store, seconds: dict, calls: list) -> object:
    """Add up the seconds the driver waits on the store: opening it, publishing the best model, and the rest."""
    real_connect, real_call, real_send, real_close = store.connect, store.call, store.send, store.close
    real_submit = store.submit

    def connect():
        start = time.perf_counter()
        try:
            return real_connect()
        finally:
            seconds["connect_s"] += time.perf_counter() - start

    def timed(real):
        def call(fn, *args, **kwargs):
            start = time.perf_counter()
            try:
                return real(fn, *args, **kwargs)
            finally:
                key = "publish_s" if fn.__name__ == "on_search_end" else "tracking_s"
                seconds[key] += time.perf_counter() - start
                calls.append(fn.__name__)

        return call

    def submit(fn, *args, **kwargs):
        """A submitted call costs the driver its hand-over and, later, any wait for its answer."""
        pending = timed(real_submit)(fn, *args, **kwargs)
        real_result = pending.result

        def result():
            start = time.perf_counter()
            try:
                return real_result()
            finally:
                seconds["tracking_s"] += time.perf_counter() - start

        pending.result = result
        return pending

    def close():
        process = getattr(store, "_process", None)
        if process is not None:
            seconds["store_process_cpu_s"] = _process_cpu_s(process.pid)
        real_close()

    # a sent call is timed as the driver pays it: handing it over, not its writing
    store.connect, store.call, store.send, store.close = connect, timed(real_call), timed(real_send), close
    store.submit = submit
    return store


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

    from hpsearch.cli import main as cli  # neither loads MLflow nor torch: the CLI's order is kept
    from hpsearch.cli import run as cli_run
    from hpsearch.tracking import store
    from hpsearch.tracking import tracker as tracking

    seconds = {"connect_s": 0.0, "publish_s": 0.0, "tracking_s": 0.0, "store_process_cpu_s": 0.0}
    calls: list[str] = []
    real_start = store.StoreProcess.start

    def start(uri, **options):
        return _NullStore() if tracking_off else _timed_store(real_start(uri, **options), seconds, calls)

    store.StoreProcess.start = start
    samples: list[float] = []
    real_ended = tracking.TrialTracker.trial_ended

    def trial_ended(self, *a, **k):
        record = real_ended(self, *a, **k)
        samples.append(_rss_mb())
        return record

    tracking.TrialTracker.trial_ended = trial_ended
    outcomes = []
    real_run_search = cli_run._run_search

    def run_search_command(cli_args, search_store):
        """As the CLI does, after the store's fork: load the runner (and undo a lever), then search."""
        from hpsearch.execution import search as runner

        real_run = runner.run_search

        def run_search(*a, **k):
            outcomes.append(real_run(*a, **k))
            return outcomes[-1]

        runner.run_search = run_search
        _apply_lever(lever)
        return real_run_search(cli_args, search_store)

    cli_run._run_search = run_search_command
    code = cli.main(["run", *args])
    outcome = outcomes[-1] if outcomes else None
    result = {
        "code": code,
        **seconds,
        "tracking_calls": len(calls),
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
        from hpsearch.execution import ray_tune as runner

        runner.ray_trial = _heavy_trial
    elif lever == "checkpoint-keep-all":  # no num_to_keep: Ray then skips the forced snapshot per checkpoint
        real_checkpoint = tune.CheckpointConfig
        tune.CheckpointConfig = lambda *a, **k: real_checkpoint()
    elif lever == "checkpoint-keep-4":  # 4 checkpoints kept per trial: a forced snapshot every 4th epoch
        real_keep = tune.CheckpointConfig
        tune.CheckpointConfig = lambda *a, **k: real_keep(num_to_keep=4)
    elif lever == "prestart-workers":  # Ray's default: a worker per CPU started for the driver, unused by Tune
        import ray

        real_init = ray.init
        ray.init = lambda *a, **k: real_init(*a, **{key: v for key, v in k.items() if key != "_system_config"})
    elif lever == "tune-usage-tag":  # Tune's callback usage tag, which imports MLflow into the driver
        from hpsearch import upstream_internals

        upstream_internals.skip_tune_callback_usage_tag = lambda: False
    elif lever == "rmsprop-torch-optim":  # RMSprop as torch.optim.RMSprop (which imports torch._dynamo)
        from hpsearch.execution import ray_tune as runner

        runner.ray_trial = _torch_optim_rmsprop_trial


def _heavy_trial(config, data, settings):
    """Pickled by value (it lives in ``__main__``): the worker imports what the runner used to, then trains."""
    import mlflow  # noqa: F401 - MLflow, scikit-learn, pandas: what a worker loaded before hpsearch.execution.trainable

    import hpsearch.execution.search  # noqa: F401
    from hpsearch.execution.trainable import ray_trial

    ray_trial(config, data, settings)


def _torch_optim_rmsprop_trial(config, data, settings):
    """Pickled by value: the worker builds RMSprop trials' optimizer with ``torch.optim.RMSprop``."""
    import torch

    from hpsearch.execution.trainable import ray_trial
    from hpsearch.training import fit as train
    from hpsearch.training import optim

    class TorchRMSprop:
        def __init__(self, model, lr, weight_decay, momentum):
            self.optimizer = torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=weight_decay,
                                                 momentum=momentum)

        def step(self, loss):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

        def state_dict(self):
            return self.optimizer.state_dict()

        def load_state_dict(self, state):
            self.optimizer.load_state_dict(state)

    def make_optimizer(name, model, *, lr, weight_decay, momentum):
        if name == "rmsprop":
            return TorchRMSprop(model, lr, weight_decay, momentum)
        return optim.make_optimizer(name, model, lr=lr, weight_decay=weight_decay, momentum=momentum)

    train.make_optimizer = make_optimizer
    ray_trial(config, data, settings)


if __name__ == "__main__":
    from hpsearch.cli.main import exit_process

    exit_process(main(sys.argv[1:]))  # exits as `python -m hpsearch` does

"""The Ray Tune trainable: the shared training function, reporting to Ray Tune once per epoch with a checkpoint.

Ray starts a worker process for each trial actor, and the worker imports the module of the function it runs:
this one imports only torch and the training code, not the driver's modules (MLflow, scikit-learn, pandas,
plotting), which cost about 3 s of CPU more per worker on 2 cores.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hpsearch.data.dataset import Dataset
from hpsearch.training.fit import TrialConfig, fit

__all__ = ["NODE_ID_KEY", "ray_trial"]

NODE_ID_KEY = "hpsearch_node_id"  # what a trial adds to its reports: Ray's id of the node it runs on


def ray_trial(config: dict[str, Any], data: Dataset, settings: dict[str, Any]) -> None:
    """One Ray Tune trial: ``config`` from the searcher, ``data`` and ``settings`` from ``tune.with_parameters``."""
    import ray
    from ray import tune

    torch.set_num_threads(settings["threads"])
    device = "cuda" if settings["gpu"] and torch.cuda.is_available() else "cpu"
    trial_config = TrialConfig.from_params(config, **settings["train"])

    node_id = ray.get_runtime_context().get_node_id()  # the node's identity; hostname and IP Tune adds itself

    def report(metrics: dict[str, float], save: Callable[[Path], None]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save(Path(directory))
            tune.report({**metrics, NODE_ID_KEY: node_id}, checkpoint=tune.Checkpoint.from_directory(directory))

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        fit(trial_config, data, report, device=device)
    else:
        with checkpoint.as_directory() as directory:
            fit(trial_config, data, report, device=device, resume_from=Path(directory))

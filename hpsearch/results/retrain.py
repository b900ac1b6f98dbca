"""Retrain an exported configuration with the shared training function, outside Ray Tune, tracked in MLflow.

The data are loaded and split exactly as the search did (same source, split and seed), the network is
trained by :func:`hpsearch.training.fit.fit` with the trial's seed and thread count, so the same file on the same
machine gives the same metrics as the trial. The new run is tagged ``hpsearch.kind=retrain`` and linked to the
search and the trial by tags (it is not a child run, so it never counts as one of the search's trials).

A space file whose data come from a function is loaded again from ``provenance.space_file``, after checking
that its SHA-256 still matches the one recorded by the search.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.entities import Metric, Param

from hpsearch.data.dataset import preprocessing_state
from hpsearch.data.sources import Dataset, Split, load_dataset
from hpsearch.errors import ConfigError
from hpsearch.model.folds import FoldAverage
from hpsearch.model.network import model_files, save_model
from hpsearch.model.user_model import UserModel
from hpsearch.results import publish
from hpsearch.results.export import search_of
from hpsearch.space import Search, load_space
from hpsearch.tracking.connection import connect, experiment_id
from hpsearch.tracking.schema import (
    KIND_RETRAIN,
    MLFLOW_RUN_NAME,
    TAG_CONFIG_FILE,
    TAG_FULL_DATA,
    TAG_KIND,
    TAG_SOURCE_TRIAL,
)
from hpsearch.training.fit import TrialConfig, evaluate, fit, model_spec

__all__ = ["RetrainResult", "load_data", "retrain"]


@dataclass
class RetrainResult:
    """What the ``train`` command prints: the new run, its last validation metrics and its test metrics."""

    run_id: str
    experiment: str
    tracking_uri: str
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str = ""


def retrain(document: dict[str, Any], *, source: Path, epochs: int | None = None, full_data: bool = False,
            tracking_uri: str | None = None, on_event: Callable[[str], None] = print) -> RetrainResult:
    """Train the exported configuration once and log it as a new MLflow run (with the pyfunc model)."""
    settings, provenance = document["settings"], document["provenance"]
    data = load_data(document)
    if full_data:
        data = _with_validation_in_training(data)
    user = UserModel.of(_space_file(document).model) if settings.get("model") else None  # the space file's own
    config = TrialConfig.from_params(document["hyperparameters"], max_epochs=epochs or settings["epochs"],
                                     seed=settings["seed"], metric=settings["metric"], mode=settings["mode"],
                                     cv=0 if full_data else settings.get("cv", 0), user_model=user)
    client, uri = connect(tracking_uri or provenance.get("tracking_uri"))
    exp_id = experiment_id(client, document["experiment"], uri)
    run_id = _start_run(client, exp_id, document, config, source, full_data)
    on_event(f"retraining {document['trial']} of experiment {document['experiment']!r} for {config.max_epochs} "
             f"epochs{' on train + validation' if full_data else ''}: run {run_id}")
    try:
        result = _train_and_log(client, run_id, config, data, threads=settings.get("cpus_per_trial", 1))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return RetrainResult(run_id, document["experiment"], uri, config.max_epochs, *result)


def load_data(document: dict[str, Any]) -> Dataset:
    """The search's data, split and preprocessed as the search did it."""
    settings, provenance = document["settings"], document["provenance"]
    space_file = Path(provenance["space_file"]) if provenance.get("space_file") else Path("space.py")
    if not str(settings["data"]).startswith("callable:"):
        model = _space_file(document).model if settings.get("model") else None
        return load_dataset(search_of(document, model=model), space_file)
    search = _space_file(document)
    return load_dataset(search_of(document, data=search.data, model=search.model), space_file)


def _space_file(document: dict[str, Any]) -> Search:
    """The search's space file, loaded after checking that it is the one the search ran (its SHA-256): its data
    function or its model function is needed."""
    provenance = document["provenance"]
    space_file = Path(provenance["space_file"]) if provenance.get("space_file") else Path("space.py")
    needed = "its model function" if document["settings"].get("model") else "its data function"
    if not space_file.is_file():
        raise ConfigError(f"provenance.space_file: {space_file} no longer exists; {needed} is needed")
    digest = publish.file_sha256(space_file)
    if digest != provenance.get("space_sha256"):
        raise ConfigError(f"provenance.space_file: {space_file} has changed since the search (sha256 {digest[:12]}, "
                          f"recorded {str(provenance.get('space_sha256'))[:12]}); restore it to retrain")
    return load_space(space_file)


# ------------------------------------------------------------------------------------------------- helpers
def _start_run(client: Any, exp_id: str, document: dict[str, Any], config: TrialConfig, source: Path,
               full_data: bool) -> str:
    provenance = document["provenance"]
    name = f"retrain-{document['trial']}"
    tags = {TAG_KIND: KIND_RETRAIN, MLFLOW_RUN_NAME: name, TAG_FULL_DATA: str(full_data).lower(),
            TAG_CONFIG_FILE: str(Path(source).resolve()), TAG_SOURCE_TRIAL: document["trial"]}
    for key in ("search_run_id", "trial_run_id", "space_file", "space_sha256"):
        if provenance.get(key):
            tags[f"hpsearch.{key}"] = str(provenance[key])
    run = client.create_run(exp_id, run_name=name, tags=tags)
    params = {**config.to_params(), "data": document["settings"]["data"], "full_data": full_data}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def _train_and_log(client: Any, run_id: str, config: TrialConfig, data: Dataset,
                   threads: float) -> tuple[dict[str, float], dict[str, float], str]:
    history: list[Metric] = []
    last: dict[str, float] = {}

    def report(metrics: dict[str, float], save: Callable[[Path], None]) -> None:
        now, epoch = int(time.time() * 1000), int(metrics["epoch"])
        history.extend(Metric(k, float(v), now, epoch) for k, v in metrics.items()
                       if k != "epoch" and math.isfinite(float(v)))
        last.update(metrics)

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, math.floor(threads)))  # the trial's thread count: same arithmetic, same metrics
    try:
        model = fit(config, data, report)
    finally:
        torch.set_num_threads(previous)
    spec = model.spec if isinstance(model, FoldAverage) else model_spec(config, data)  # cv: the folds' average
    test_metrics = evaluate(model, data.test, spec, prefix="test_")
    now = int(time.time() * 1000)
    history += [Metric(k, v, now, 0) for k, v in test_metrics.items()]
    history.append(Metric("epochs_trained", float(last.get("epoch", 0)), now, 0))
    for start in range(0, len(history), 1000):
        client.log_batch(run_id, metrics=history[start : start + 1000])
    with tempfile.TemporaryDirectory() as directory:
        save_model(model, spec, Path(directory), code=config.user_model.code if config.user_model else None)
        for path in model_files(directory):
            client.log_artifact(run_id, str(path), "model")
        publish.log_pyfunc(client, run_id, Path(directory), preprocessing_state(data.preprocessor))
    metrics = {k: float(v) for k, v in last.items() if k != "epoch"}
    return metrics, test_metrics, f"runs:/{run_id}/{publish.MODEL_PATH}"


def _with_validation_in_training(data: Dataset) -> Dataset:
    """``--full-data``: train on train + validation; the test split stays held out for the final figures."""
    train = Split(np.concatenate([data.train.X, data.val.X]), np.concatenate([data.train.y, data.val.y]))
    return replace(data, train=train)

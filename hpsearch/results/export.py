"""A search's winner out of MLflow: the ranked trials, and the best configuration as a file that retrains.

MLflow is the only source of truth here: everything is read from the parent run (settings as params,
provenance tags) and its child runs (each trial's params, metrics and status tags), through an
:class:`~mlflow.MlflowClient` for the given tracking URI, so it works after ``ray_results/`` is deleted and
against a remote tracking server.

The exported file (YAML or JSON, by its suffix) has four sections: ``hyperparameters`` (every one, the layer
sizes as a list), ``settings`` (data source, target, task, split, seed, epochs trained, metric), ``metrics``
(validation and test) and ``provenance`` (run ids, tracking URI, space file and its hash, versions).
:func:`read_export` loads it with ``yaml.safe_load`` and checks every field, naming the one that is wrong.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hpsearch.errors import ConfigError, NotFoundError, SpaceError
from hpsearch.space import HYPERPARAMETERS, TRAINING_CHOICES, TRAINING_PARAMS, Search, hyperparameters
from hpsearch.tracking.reader import read_trials
from hpsearch.tracking.schema import (
    TAG_DATA_PATH,
    TAG_SPACE_FILE,
    TAG_SPACE_SHA256,
    TAG_VERSION_PREFIX,
    TrialRecord,
    rank,
)

if TYPE_CHECKING:  # hyperparameters() needs no MLflow
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["FORMAT", "best_trial", "build_export", "rank_trials", "read_export", "search_of", "write_export"]

FORMAT = "hpsearch-best/1"
SETTINGS_REQUIRED = ("data", "target", "task", "split", "seed", "epochs", "metric", "mode")
SETTINGS_OPTIONAL = ("data_path", "max_epochs", "cpus_per_trial", "drop", "model", "best_epoch", "cv")
SECTIONS = {"format": str, "experiment": str, "trial": str, "hyperparameters": dict, "settings": dict,
            "metrics": dict, "provenance": dict}


# ------------------------------------------------------------------------------------------------ queries
def rank_trials(client: MlflowClient, search: Run) -> list[TrialRecord]:
    """The search's completed and stopped trials that reported its metric, best first (as the runner ranks)."""
    trials = read_trials(client, search.info.experiment_id, search.info.run_id)
    return rank(trials, search.data.params["metric"], search.data.params["mode"])


def best_trial(client: MlflowClient, search: Run) -> TrialRecord:
    ranked = rank_trials(client, search)
    if not ranked:
        raise NotFoundError(f"search {search.info.run_id} ({search.info.run_name}) has no completed trial "
                            f"with a value for {search.data.params['metric']!r}; every trial failed or was killed")
    return ranked[0]


# ------------------------------------------------------------------------------------------------- export
def build_export(client: MlflowClient, tracking_uri: str, search: Run, trial: TrialRecord) -> dict[str, Any]:
    """The export document of a search's best trial."""
    params, tags = search.data.params, search.data.tags
    settings: dict[str, Any] = {
        "data": params["data"] if ":" in params["data"] else f"callable:{params['data']}",
        **({"data_path": tags[TAG_DATA_PATH]} if TAG_DATA_PATH in tags else {}),
        "target": None if params.get("target") in (None, "None") else params["target"],
        "task": params["task"],
        "split": [float(f) for f in params["split"].split("/")],
        "seed": int(params["seed"]),
        "epochs": trial.epochs,
        "best_epoch": trial.best_epoch,  # the trial's model is this epoch's; a retrain keeps its best epoch too
        "max_epochs": int(params["max_epochs"]),
        "metric": params["metric"],
        "mode": params["mode"],
        "cpus_per_trial": float(params.get("cpus_per_trial", 1)),
        **({"drop": json.loads(params["drop"])} if params.get("drop") not in (None, "[]") else {}),
        **({"model": params["model"]} if params.get("model") not in (None, "None") else {}),
        **({"cv": int(params["cv"])} if params.get("cv") not in (None, "None", "0") else {}),  # folds it trained on
    }
    val = {k: trial.value(k) for k in trial.metrics if k.startswith(("val_", "train_"))}  # at the best epoch
    test = {k: v for k, v in trial.metrics.items() if k.startswith("test_")}
    versions = {k.removeprefix(TAG_VERSION_PREFIX): v for k, v in tags.items() if k.startswith(TAG_VERSION_PREFIX)}
    provenance = {
        "tracking_uri": tracking_uri,
        "experiment_id": search.info.experiment_id,
        "search_run_id": search.info.run_id,
        "trial_run_id": trial.run_id,
        "space_file": tags.get(TAG_SPACE_FILE),
        "space_sha256": tags.get(TAG_SPACE_SHA256),
        "versions": versions,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if any(a.path == "pyfunc_model" for a in client.list_artifacts(trial.run_id)):
        provenance["model_uri"] = f"runs:/{trial.run_id}/pyfunc_model"
    experiment = client.get_experiment(search.info.experiment_id).name
    return {"format": FORMAT, "experiment": experiment, "trial": trial.name,
            "hyperparameters": hyperparameters(trial.params), "settings": settings,
            "metrics": {"validation": val, "test": test}, "provenance": provenance}


def write_export(document: dict[str, Any], path: Path) -> None:
    """Write as YAML (``.yaml``/``.yml``) or JSON (``.json``), in the document's section order."""
    path = Path(path)
    _check_suffix(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2) + "\n")
        return
    header = "# The best configuration of an hpsearch search. Retrain it with:\n#   python -m hpsearch train " \
             f"{path.name}\n"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None))


def read_export(path: Path) -> dict[str, Any]:
    """Load and check an exported file; any problem is a :class:`ConfigError` naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    _check_suffix(path)
    try:
        document = yaml.safe_load(path.read_text())  # JSON is YAML: one safe loader for both
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {str(err).splitlines()[0]}") from None
    try:
        _check_document(document)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return document


def search_of(document: dict[str, Any], data: Any = None, model: Any = None) -> Search:
    """The exported settings and hyperparameters as a :class:`Search` (which checks every value); ``model`` is
    the space file's model function when the search had one (``settings.model``)."""
    settings = document["settings"]
    source = data if data is not None else settings["data"]
    if isinstance(source, str) and source.split(":", 1)[0] in ("csv", "parquet") and settings.get("data_path"):
        source = f"{source.split(':', 1)[0]}:{settings['data_path']}"
    try:
        return Search(data=source, target=settings["target"], task=settings["task"], split=settings["split"],
                      seed=settings["seed"], params=document["hyperparameters"], drop=settings.get("drop", ()),
                      model=model if model is not None or not settings.get("model") else _placeholder_model)
    except SpaceError as err:
        if err.field is None:  # several names at once (unknown hyperparameters), each named in the message
            raise ConfigError(err.message.replace("params.", "hyperparameters.")) from None
        field = err.field.replace("params.", "hyperparameters.")
        field = field if field.startswith("hyperparameters") else f"settings.{field}"
        raise ConfigError(f"field '{field}': {err.message}") from None


# ------------------------------------------------------------------------------------------------- checks
def _check_suffix(path: Path) -> None:
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"{path}: the file must end in .yaml, .yml or .json")


def _check_document(document: Any) -> None:
    if not isinstance(document, dict):
        raise ConfigError(f"must be a mapping with the sections {', '.join(SECTIONS)}")
    _check_keys(document, SECTIONS, (), "")
    for key, kind in SECTIONS.items():
        if not isinstance(document[key], kind):
            raise ConfigError(f"field '{key}' must be a {kind.__name__}, but is {document[key]!r}")
    if document["format"] != FORMAT:
        raise ConfigError(f"field 'format' must be {FORMAT!r}, but is {document['format']!r}")
    settings = document["settings"]
    if settings.get("model"):  # the space file's own model: its function reads names of its own
        _check_keys(document["hyperparameters"], TRAINING_PARAMS, tuple(document["hyperparameters"]),
                    "hyperparameters.")
    else:
        _check_keys(document["hyperparameters"], tuple(k for k in HYPERPARAMETERS if k not in TRAINING_CHOICES),
                    TRAINING_CHOICES, "hyperparameters.")
    _check_keys(settings, SETTINGS_REQUIRED, SETTINGS_OPTIONAL, "settings.")
    epochs = settings["epochs"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"field 'settings.epochs' must be an integer >= 1, but is {epochs!r}")
    if settings["mode"] not in ("min", "max"):
        raise ConfigError(f"field 'settings.mode' must be 'min' or 'max', but is {settings['mode']!r}")
    from hpsearch.training.fit import metric_names

    if settings["metric"] not in metric_names(str(settings["task"])):
        raise ConfigError(f"field 'settings.metric' must be one of {', '.join(metric_names(str(settings['task'])))}"
                          f" for task {settings['task']!r}, but is {settings['metric']!r}")
    from_function = str(settings["data"]).startswith("callable:")
    provenance = document["provenance"]
    if from_function and not (provenance.get("space_file") and provenance.get("space_sha256")):
        raise ConfigError("data from a function in the space file needs 'provenance.space_file' and "
                          "'provenance.space_sha256'")
    search_of(document, data=_placeholder if from_function else None)


def _placeholder() -> None:
    """Stands in for a space file's data function while the other fields are checked."""


def _placeholder_model(config: Any, input_shape: Any, n_outputs: Any) -> None:
    """Stands in for a space file's model function while the hyperparameters are checked."""


def _check_keys(section: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...], prefix: str) -> None:
    missing = [k for k in required if k not in section]
    if missing:
        raise ConfigError(f"field '{prefix}{missing[0]}' is missing; '{prefix.rstrip('.') or 'the file'}' needs "
                          f"{', '.join(required)}")
    unknown = [k for k in section if k not in required and k not in optional]
    if unknown:
        raise ConfigError(f"field '{prefix}{unknown[0]}' is unknown; allowed: {', '.join((*required, *optional))}")

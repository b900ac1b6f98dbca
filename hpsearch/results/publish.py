"""Log a trained model as the pyfunc model of :mod:`hpsearch.model.pyfunc`, and register a search's winner.

The model is saved locally with ``mlflow.pyfunc.save_model`` and uploaded into the run's artifacts with the
run's own :class:`~mlflow.MlflowClient`, so it needs no global tracking URI and no active run. Requirements
are given, not inferred: inferring them loads the model in a subprocess and costs seconds. The code the model
runs travels with it (:func:`code_package`), so it loads and serves where hpsearch is not installed.

Registry policy: every search registers its model as a new version of the model named after the experiment:
the ensemble of its trials (:mod:`hpsearch.results.ensemble`, logged into the parent run) when it has one of
several members, else the best trial's model. The best trial's own model is logged into its run either way.
The alias ``best`` moves to the new version only when its validation metric beats the version the alias points
at (same metric, the search's mode), so ``models:/EXPERIMENT@best`` is always the best model any search of that
experiment has produced. A version that does not win keeps the tag ``hpsearch.best=false``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch import upstream_internals
from hpsearch.model.network import SPEC_FILE, ModelSpec, model_files
from hpsearch.tracking.schema import (
    TAG_DATA_PATH,
    TAG_MODEL_VERSION,
    TAG_PUBLISHED,
    TAG_SPACE_SHA256,
    TAG_VERSION_BEST,
    TAG_VERSION_METRIC,
    TAG_VERSION_MODE,
    TAG_VERSION_PREFIX,
    TAG_VERSION_VALUE,
)

if TYPE_CHECKING:  # MLflow loads where the client is (hpsearch.tracking.store), never in a driver that only names these
    from mlflow import MlflowClient

__all__ = ["BEST_ALIAS", "MODEL_PATH", "Registered", "code_package", "log_ensemble", "log_pyfunc", "on_search_end",
           "provenance_tags", "publish_best", "register"]

BEST_ALIAS = "best"
#: What the parent run's tag ``hpsearch.published`` says the registered model is.
PUBLISHED_BEST, PUBLISHED_ENSEMBLE = "best_trial", "ensemble"
#: Where the pyfunc model lies in a run's artifacts (``runs:/RUN_ID/pyfunc_model``).
MODEL_PATH = "pyfunc_model"
# MLflow's per-file progress bars and its "validating input example" line are noise in a search's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)

#: What the model needs where it is served (the preprocessing is numpy and pandas, not scikit-learn).
REQUIREMENTS = ("torch", "numpy", "pandas", "mlflow")


@dataclass(frozen=True)
class Registered:
    """A registered model version and whether the alias ``best`` now points at it."""

    name: str
    version: str
    is_best: bool
    log_seconds: float
    what: str = "the best trial's model"
    again: bool = False  # the run's model was registered before (a resumed or continued search): not again


def log_pyfunc(client: MlflowClient, run_id: str, model_dir: Path, preprocessing: dict[str, Any]) -> str:
    """Save the weights + spec in ``model_dir`` with the preprocessing as a pyfunc model in the run's artifacts.

    Returns the model's artifact URI (a registry ``source``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        files = _model_folder(Path(tmp) / "files", model_dir, preprocessing)
        return _save_pyfunc(client, run_id, files, preprocessing, Path(tmp))


def log_ensemble(client: MlflowClient, run_id: str, members: list[dict[str, Any]],
                 preprocessing: dict[str, Any]) -> str:
    """Log several trials' models (``model_dir`` and ``weight`` each) as one pyfunc model that serves their
    weighted average (:mod:`hpsearch.model.ensemble`) in the run's artifacts; returns its artifact URI."""
    from hpsearch.model.ensemble import write_members

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "files"
        listed = []
        for i, member in enumerate(members):
            folder = f"member_{i}"
            _model_folder(files / folder, Path(member["model_dir"]), preprocessing)
            listed.append({"folder": folder, "weight": member["weight"], "trial": member["trial"],
                           "run_id": member["run_id"]})
        write_members(files, listed)
        return _save_pyfunc(client, run_id, files, preprocessing, Path(tmp), spec_dir=files / "member_0")


def _model_folder(files: Path, model_dir: Path, preprocessing: dict[str, Any]) -> Path:
    """A model's files as a served model reads them: its weights and spec (and a user model's code), and the
    preprocessing."""
    from hpsearch.model.pyfunc import PREPROCESSING_FILE

    files.mkdir(parents=True)
    for path in model_files(model_dir):  # the space file's code too, for its own model
        (files / path.name).write_bytes(path.read_bytes())
    (files / PREPROCESSING_FILE).write_text(json.dumps(preprocessing, indent=2))
    return files


def _save_pyfunc(client: MlflowClient, run_id: str, files: Path, preprocessing: dict[str, Any], tmp: Path,
                 spec_dir: Path | None = None) -> str:
    """``files`` saved as a pyfunc model (:mod:`hpsearch.model.pyfunc`) and logged into the run's artifacts."""
    import mlflow.pyfunc

    from hpsearch.model.pyfunc import CODE_FILE, input_example, input_metadata, signature

    spec = ModelSpec.from_json(((spec_dir or files) / SPEC_FILE).read_text())
    saved = tmp / MODEL_PATH
    mlflow.pyfunc.save_model(
        str(saved),
        python_model=str(CODE_FILE),
        artifacts={"model": str(files)},
        signature=signature(preprocessing, spec),
        input_example=input_example(preprocessing),
        pip_requirements=_requirements(),
        code_paths=[str(code_package(tmp / "code"))],
        metadata=input_metadata(preprocessing),
    )
    client.log_artifacts(run_id, str(saved), MODEL_PATH)
    return f"{client.get_run(run_id).info.artifact_uri}/{MODEL_PATH}"


def code_package(directory: Path) -> Path:
    """Copy the package :mod:`hpsearch.model` (the code the model runs) into ``directory/CODE_PACKAGE`` for
    MLflow's ``code_paths``; return that folder.

    The package imports nothing of hpsearch outside itself: an absolute import of hpsearch in it would fail where
    hpsearch is not installed, so it is refused here (a RuntimeError, caught by the tests).
    """
    from hpsearch import model
    from hpsearch.model.pyfunc import CODE_FILE, CODE_PACKAGE

    package = Path(directory) / CODE_PACKAGE
    package.mkdir(parents=True)
    for source in sorted(Path(model.__file__).parent.glob("*.py")):
        if source != CODE_FILE:  # MLflow's entry point is stored as the model's code file, not in the package
            text = source.read_text()
            _check_relative(text, source.name)
            (package / source.name).write_text(text)
    return package


def _check_relative(text: str, module: str) -> None:
    """Refuse ``import hpsearch...`` in a module that travels with the model."""
    for node in ast.walk(ast.parse(text)):
        absolute = []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            absolute = [node.module or ""]
        elif isinstance(node, ast.Import):
            absolute = [alias.name for alias in node.names]
        if any(name.split(".")[0] == "hpsearch" for name in absolute):
            raise RuntimeError(f"hpsearch/model/{module} travels with the model and must import hpsearch's modules "
                               f"relatively (from .x import ...), line {node.lineno}")


def register(client: MlflowClient, name: str, source: str, run_id: str, *, metric: str, mode: str,
             value: float) -> tuple[str, bool]:
    """A new version of model ``name``; the alias ``best`` moves to it when ``value`` beats the current best."""
    from mlflow.exceptions import MlflowException

    client = _registry(client)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Best models of the hpsearch experiment of that name.")
    version = client.create_model_version(name, source, run_id=run_id,
                                          tags={TAG_VERSION_METRIC: metric, TAG_VERSION_MODE: mode,
                                                TAG_VERSION_VALUE: repr(float(value))}).version
    is_best = _beats_current(client, name, metric, mode, value)
    if is_best:
        client.set_registered_model_alias(name, BEST_ALIAS, version)
    client.set_model_version_tag(name, version, TAG_VERSION_BEST, str(is_best).lower())
    return str(version), is_best


def publish_best(client: MlflowClient, best: Any, *, experiment: str, parent_run_id: str, metric: str, mode: str,
                 preprocessing: dict[str, Any], ensemble: Any = None, refit: Any = None) -> Registered | None:
    """After a search: log the best trial's model as a pyfunc model into its run, and register the search's model:
    that one; or, logged into the parent run, the ``ensemble`` of several trials, or the ``refit`` model (each an
    :class:`~hpsearch.results.ensemble.Ensemble`).

    ``best`` is the best trial's :class:`~hpsearch.tracking.tracker.TrialRecord`; nothing happens when it has no model.
    ``preprocessing`` is :func:`~hpsearch.data.dataset.preprocessing_state` of the search's data.
    """
    if best is None or best.model_dir is None:
        return None
    registered = _registered_before(client, experiment, best.run_id, metric=metric, mode=mode,
                                    value=best.metrics[metric])
    if registered is not None:  # a kill after its publishing, or no new trial beat it: one version per run
        client.set_tag(parent_run_id, TAG_MODEL_VERSION, registered.version)
        return registered
    started = time.monotonic()
    source = log_pyfunc(client, best.run_id, Path(best.model_dir), preprocessing)
    run_id, value, what = best.run_id, best.value(metric), f"the best trial's model ({best.name})"
    several = ensemble is not None and len(ensemble.members) > 1
    if several:  # chosen on the validation rows: its value there is the registry's
        value, what = ensemble.metrics[metric], f"the ensemble of {len(ensemble.members)} trials"
    published = refit or (ensemble if several else None)
    if published is not None:
        run_id, members = parent_run_id, published.members
        source = (log_ensemble(client, run_id, members, preprocessing) if len(members) > 1
                  else log_pyfunc(client, run_id, Path(members[0]["model_dir"]), preprocessing))
        what += ", refit on training + validation rows," if refit is not None else ""
    version, is_best = register(client, experiment, source, run_id, metric=metric, mode=mode, value=value)
    seconds = time.monotonic() - started
    client.log_metric(run_id, "model_log_seconds", seconds)
    client.set_tag(parent_run_id, TAG_MODEL_VERSION, version)
    client.set_tag(parent_run_id, TAG_PUBLISHED, _published(several, refit is not None))
    return Registered(experiment, version, is_best, seconds, what)


def _published(several: bool, refit: bool) -> str:
    """The parent run's tag ``hpsearch.published``: ``best_trial`` or ``ensemble``, ``_refit`` when refit."""
    return (PUBLISHED_ENSEMBLE if several else PUBLISHED_BEST) + ("_refit" if refit else "")


def _registered_before(client: MlflowClient, name: str, run_id: str, *, metric: str, mode: str,
                       value: float) -> Registered | None:
    """The version of model ``name`` already registered for this run, if any, with the alias ``best`` moved to
    it if it wins (a kill may have come between its registration and the alias)."""
    from mlflow.exceptions import MlflowException

    registry = _registry(client)
    try:
        found = registry.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    if not found:
        return None
    version = str(min(int(v.version) for v in found))
    try:
        is_best = str(registry.get_model_version_by_alias(name, BEST_ALIAS).version) == version
    except MlflowException:
        is_best = False
    if not is_best and _beats_current(registry, name, metric, mode, value):
        registry.set_registered_model_alias(name, BEST_ALIAS, version)
        registry.set_model_version_tag(name, version, TAG_VERSION_BEST, "true")
        is_best = True
    return Registered(name, version, is_best, 0.0, again=True)


def on_search_end(client: MlflowClient, best: Any, *, experiment: str, parent_run_id: str, metric: str, mode: str,
                  space_file: Path, data: Any, preprocessing: dict[str, Any], ensemble: Any = None,
                  refit: Any = None, tree: dict[str, float] | None = None) -> list[str]:
    """The runner's hook at the end of a search: provenance tags, the ensemble and the tree baseline on the parent
    run, then :func:`publish_best`.

    ``data`` is the space file's ``data`` field. Returns the lines to show.
    The search's runs are complete by now: a registry that fails is reported, not raised.
    """
    from mlflow.exceptions import MlflowException

    from hpsearch.results import baseline
    from hpsearch.results import ensemble as ensembles

    for key, value in provenance_tags(space_file, data).items():
        client.set_tag(parent_run_id, key, value)
    for chosen in (ensemble, refit):
        if chosen is not None:
            ensembles.record(client, parent_run_id, chosen)
    if tree:
        baseline.record(client, parent_run_id, tree)
    try:
        registered = publish_best(client, best, experiment=experiment, parent_run_id=parent_run_id, metric=metric,
                                  mode=mode, preprocessing=preprocessing, ensemble=ensemble, refit=refit)
    except MlflowException as err:
        return [f"warning: the best model was not registered: {str(err).splitlines()[0]}"]
    if registered is None:
        return []
    if registered.again:
        return [f"the best trial's model was registered before, as {registered.name} version {registered.version}: "
                f"not registered again (models:/{registered.name}@{BEST_ALIAS})"]
    moved = "alias 'best' moved to it" if registered.is_best else "an earlier search's model stays @best"
    return [f"{registered.what} logged and registered as {registered.name} version {registered.version} "
            f"({moved}) in {registered.log_seconds:.1f}s: models:/{registered.name}@{BEST_ALIAS}"]


def provenance_tags(space_file: Path, data: Any) -> dict[str, str]:
    """Tags for a search's parent run: the space file's hash, where the data is, and the versions used."""
    space_file = Path(space_file).resolve()  # its path is tagged when the search starts (tracking)
    tags = {TAG_SPACE_SHA256: file_sha256(space_file)}
    if isinstance(data, str) and data.split(":", 1)[0] in ("csv", "parquet"):
        tags[TAG_DATA_PATH] = str((space_file.parent / data.split(":", 1)[1]).resolve())
    for package in ("hpsearch", "torch", "ray", "mlflow"):
        tags[f"{TAG_VERSION_PREFIX}{package}"] = _version(package)
    return tags


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _registry(client: MlflowClient) -> MlflowClient:
    """A client whose registry is the tracking store (or ``MLFLOW_REGISTRY_URI``), whatever MLflow's globals say."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=client.tracking_uri,
                        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or client.tracking_uri)


def _beats_current(client: MlflowClient, name: str, metric: str, mode: str, value: float) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, BEST_ALIAS)
    except MlflowException:
        return True  # no alias yet
    if current.tags.get(TAG_VERSION_METRIC) != metric or TAG_VERSION_VALUE not in current.tags:
        return True  # a search that optimised another metric: the newest search decides
    old = float(current.tags[TAG_VERSION_VALUE])
    return value < old if mode == "min" else value > old


def warm_up() -> None:
    """Do now, in the store's process while the driver loads torch, what publishing the best model does first:
    load MLflow's pyfunc flavor and run its requirements check once (about 0.4 s the search's end would wait for:
    :func:`hpsearch.upstream_internals.warm_mlflow_requirements_check`)."""
    import mlflow.pyfunc  # noqa: F401 - loaded now rather than at the search's end

    upstream_internals.warm_mlflow_requirements_check(_requirements())


def _requirements() -> list[str]:
    return [f"{p}=={_version(p).split('+')[0]}" for p in REQUIREMENTS]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

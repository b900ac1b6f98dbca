"""Which executor runs a search: ``ray``, ``local`` or ``batched`` as asked, or what ``auto`` picks, and why.

``auto`` picks ``batched`` for the built-in network when it is small (every hidden layer at most
:data:`AUTO_MAX_WIDTH` units, at most :data:`AUTO_MAX_VALUES` training values, no GPU, not resuming), else
``local`` for a budget of a few seconds (:data:`AUTO_LOCAL_BUDGET`), else ``ray``.
"""

from __future__ import annotations

from hpsearch.data.dataset import Dataset
from hpsearch.errors import SpaceError
from hpsearch.execution.ray_tune import ray_running
from hpsearch.space import Layers, Search

__all__ = ["AUTO_LOCAL_BUDGET", "AUTO_MAX_VALUES", "AUTO_MAX_WIDTH", "choose_executor", "runs_on_ray", "widest_layer"]

#: ``auto`` runs a search in-process when trials x epochs x training rows is at most this: a few seconds of
#: training at the loop's speed, far less than Ray's start-up, so parallel trials could not win it back.
AUTO_LOCAL_BUDGET = 100_000


def choose_local_or_ray(executor: str, search: Search, n_train: int, *, resume: bool) -> str:
    """``"ray"`` or ``"local"``: ``auto`` picks local for a small CPU budget when no Ray is running here."""
    if executor != "auto":
        return executor
    if search.num_samples is None:  # trials until a time budget is spent: not a budget of a few seconds
        return "ray"
    budget = search.num_samples * search.max_epochs * n_train
    small = budget <= AUTO_LOCAL_BUDGET and search.resources["gpu"] == 0
    return "local" if small and not resume and not ray_running() else "ray"


#: ``auto`` chooses batched when no hidden layer can be wider than this ...
AUTO_MAX_WIDTH = 256


#: ... and the training rows x features are at most this many values (40 MB of float32): beyond either, one
#: trial's matrix products keep a core busy on their own, and Ray's parallel trials are what pays.
AUTO_MAX_VALUES = 10_000_000


def choose_executor(executor: str, search: Search, data: Dataset, *, resume: bool) -> tuple[str, str]:
    """The executor that runs the search and, for ``auto``, why (a line the search prints; empty otherwise).

    ``auto`` chooses ``batched`` for small networks (every hidden layer at most :data:`AUTO_MAX_WIDTH` units) on
    data of at most :data:`AUTO_MAX_VALUES` training values, without GPUs per trial and not resuming; otherwise
    what it chose before batched existed (:func:`~hpsearch.execution.inprocess.choose_executor`: local for a
    small budget).
    """
    if executor == "batched" and search.model is not None:
        raise SpaceError("'batched' trains the built-in network only (its layers stacked per population), not a "
                         "model function; use executor='local' or 'ray'", field="executor")
    if executor != "auto":
        return executor, ""
    if search.model is not None:
        chosen = choose_local_or_ray("auto", search, len(data.train), resume=resume)
        return chosen, f"executor auto: {chosen} (not batched: the space file's own model)"
    widest, values = widest_layer(search), len(data.train) * data.n_features
    if not resume and search.resources["gpu"] == 0 and widest <= AUTO_MAX_WIDTH and values <= AUTO_MAX_VALUES:
        return "batched", (f"executor auto: batched (hidden layers at most {widest} units <= {AUTO_MAX_WIDTH}, "
                           f"{values:,} training values <= {AUTO_MAX_VALUES:,}, no GPU): trials train in "
                           "populations, one vectorised model per population")
    why = ("resuming" if resume else "GPUs per trial" if search.resources["gpu"] else
           f"hidden layers up to {widest} units > {AUTO_MAX_WIDTH}" if widest > AUTO_MAX_WIDTH else
           f"{values:,} training values > {AUTO_MAX_VALUES:,}")
    chosen = choose_local_or_ray("auto", search, len(data.train), resume=resume)
    return chosen, f"executor auto: {chosen} (not batched: {why})"


def widest_layer(search: Search) -> int:
    """The widest hidden layer any trial of the search can have."""
    layers = search.params.get("layers", [64])
    if isinstance(layers, Layers):
        if layers.sizes is not None:
            return max(layers.sizes, default=0)
        if layers.choices is not None:
            return max((max(s, default=0) for s in layers.choices), default=0)
        return layers.units[1] if layers.max_layers else 0
    return max((int(u) for u in layers), default=0)


def runs_on_ray(search: Search, address: str | None) -> bool:
    """Whether the populations run on Ray: a cluster named, GPUs per trial, or a Ray this process already runs."""
    return address is not None or search.resources["gpu"] > 0 or ray_running()

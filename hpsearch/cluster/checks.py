"""Before a search uses a Ray cluster: what it needs (shared storage, a tracking server, enough resources), and
the errors that say how to fix a connection.

hpsearch writes no distribution of its own: on a Ray cluster the runner connects with ``ray.init(address=...)``
and Ray Tune places trials on the nodes; :func:`check_cluster` first makes sure a multi-node search has what it
needs. Ray 2.60 authenticates with a token (``RAY_AUTH_MODE=token`` and the token in ``~/.ray/auth_token``,
``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``); Ray itself never sends a token to an address given explicitly
unless ``RAY_AUTH_MODE=token`` is set, so we do not either: we say how to fix it (:func:`connection_error`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpsearch.errors import ClusterError

__all__ = ["STORAGE_NEEDED", "TOKEN_HELP", "TRACKING_NEEDED", "alive_nodes", "check_cluster", "connection_error",
           "is_server", "storage_path", "wait_for_nodes"]

TOKEN_HELP = ("the cluster uses Ray token authentication: set RAY_AUTH_MODE=token and give the cluster's token "
              "in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH=FILE or RAY_AUTH_TOKEN (on the head node: "
              "`ray get-auth-token`)")
STORAGE_NEEDED = ("--storage PATH_OR_URI: a folder every node shares (e.g. /shared/ray_results) or an object store "
                  "URI (s3://bucket/path, gs://...) for the trials' checkpoints")
TRACKING_NEEDED = "--tracking-uri http://HOST:PORT: an MLflow tracking server every node can reach"


def storage_path(storage: str | None, default: Path) -> str:
    """Ray Tune's ``storage_path``: a URI as given (``s3://...``), a local folder made absolute."""
    if storage is None:
        return str(default.resolve())
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def check_cluster(nodes: Sequence[dict[str, Any]], resources: dict[str, float], tracking_uri: str | None,
                  storage: str | None) -> None:
    """Refuse a search the cluster cannot finish, before anything is written.

    Args:
        nodes: ``ray.nodes()``.
        resources: what one trial asks for (``{"cpu": 1, "gpu": 0}``).
        tracking_uri: ``--tracking-uri`` (``None``: the local store).
        storage: ``--storage`` (``None``: the local results folder).

    Several nodes need a storage every node writes its checkpoints to and reads back from, and one tracking
    server every node can reach; a local folder or SQLite file on the driver's machine is neither. A trial
    that fits the cluster's total but no single node would wait forever.
    """
    alive = alive_nodes(nodes)
    biggest = {key: max((n.get("Resources", {}).get(key.upper(), 0) for n in alive), default=0)
               for key in ("cpu", "gpu")}
    for key, needed in resources.items():
        if key in biggest and needed > biggest[key]:
            raise ClusterError(f"a trial asks for {needed:g} {key.upper()}s (resources.{key}, --{key}s-per-trial) "
                               f"but the largest of the cluster's {len(alive)} nodes has {biggest[key]:g}")
    if len(alive) <= 1:
        return
    missing = [] if storage else [STORAGE_NEEDED]
    if not is_server(tracking_uri):
        missing.append(f"{TRACKING_NEEDED} (got {tracking_uri or 'the local store ./mlruns'})")
    if missing:
        raise ClusterError(f"the Ray cluster has {len(alive)} nodes, so the search needs " + "; and ".join(missing))


def alive_nodes(nodes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alive entries of ``ray.nodes()`` (dead nodes stay listed for a while)."""
    return [n for n in nodes if n.get("Alive")]


def is_server(tracking_uri: str | None) -> bool:
    return (tracking_uri or "").startswith(("http://", "https://"))


def connection_error(address: str, err: BaseException) -> ClusterError:
    """One clear line for a cluster that cannot be reached, with the fix for Ray's token authentication."""
    text = str(err).strip().splitlines()
    first = text[0] if text else type(err).__name__
    if _is_auth_error(err) and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return ClusterError(f"cannot connect to the Ray cluster at {address}: {TOKEN_HELP}")
    if _is_auth_error(err):
        return ClusterError(f"cannot connect to the Ray cluster at {address}: the token was refused or not found "
                            f"({first}); {TOKEN_HELP}")
    return ClusterError(f"cannot connect to the Ray cluster at {address}: {first}")


def _is_auth_error(err: BaseException) -> bool:
    """Whether ``err`` or what caused it is Ray refusing us for want of the right token."""
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    return any(word in text for word in ("authentication", "auth_token", "unauthorized", "unauthenticated", "401",
                                         "403", "forbidden", "invalidauthtoken"))


def wait_for_nodes(address: str, count: int, timeout_s: float = 300) -> int:
    """Block until the Ray cluster at ``address`` has ``count`` alive nodes (used by the batch script)."""
    import ray

    deadline = time.monotonic() + timeout_s
    alive = 0
    while time.monotonic() < deadline:
        try:
            if not ray.is_initialized():
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            alive = sum(bool(n["Alive"]) for n in ray.nodes())
            if alive >= count:
                ray.shutdown()
                return alive
        except Exception:  # noqa: BLE001 - the head is still starting; try again
            ray.shutdown()
        time.sleep(2)
    raise ClusterError(f"the Ray cluster at {address} has {alive} of {count} nodes after {timeout_s:.0f}s")

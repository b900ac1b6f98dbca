"""The search's MLflow client, in the driver's own process, and the writes it does not wait for.

Every write to the tracking store goes through :meth:`Store.call`: ``store.call(fn, *args)`` runs
``fn(client, *args)`` and returns what ``fn`` returns; a failure of the machine or the store (a full disk, a
server gone) comes out as one :class:`MachineError` naming the store (:func:`store_failure`).

Writes nobody waits for (a trial's per-epoch metrics, its last metrics and tags) go through :meth:`Store.send`:
their ``log_batch`` calls use MLflow's own asynchronous logging (``synchronous=False``), so the driver, in Ray
Tune's loop, goes on while MLflow's thread writes them. MLflow ends a run (``set_terminated``) only once its
queue is written, so a trial's run is closed with everything it was sent; :meth:`Store.flush` waits for what
was sent, and runs before every :meth:`Store.call` and at :meth:`Store.close`, so a sent write that failed
is raised there, by the next call. (An earlier design ran MLflow in a forked process of its own; measured
side by side in ``bench/machinery.py``, it did not pay: docs/benchmarks.md.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from hpsearch.errors import MachineError, TrackingError, machine_failure

__all__ = ["LocalStore", "Store", "store_failure"]

# MLflow's writing thread logs a failed batch before it keeps its error; hpsearch raises it itself, in one line.
logging.getLogger("mlflow.utils.async_logging.async_logging_queue").setLevel(logging.CRITICAL)


class Store:
    """The search's MLflow client. Nothing is written before :meth:`connect`."""

    uri: str | None = None  # the URI in use, once connected

    def connect(self) -> str:
        """Open the store (the default one is created here) and check that it answers; returns its URI."""
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(client, *args, **kwargs)``; its exceptions are raised here."""
        raise NotImplementedError

    def send(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Like :meth:`call`, for a write whose answer nobody waits for: its batches may still be written when
        this returns. An error of a sent write is raised by the next :meth:`call` (or :meth:`flush`)."""
        self.call(fn, *args, **kwargs)

    def flush(self) -> None:
        """Wait until every sent write is written; raise the first one's error."""

    def close(self) -> None:
        """Write what was sent and let the store go."""


class LocalStore(Store):
    """The MLflow client in this process, for ``tracking_uri`` (or an open ``client``: tests, tools)."""

    def __init__(self, tracking_uri: str | None = None, client: Any = None) -> None:
        self.requested_uri = tracking_uri
        self.client = client
        self._sent: list[tuple[tuple, Any]] = []  # (a sent batch's arguments, MLflow's RunOperations for it)
        if client is not None:
            self.uri = client.tracking_uri

    def connect(self) -> str:
        if self.client is None:
            from hpsearch.tracking import tracker as tracking

            self.client, self.uri = tracking.connect(self.requested_uri)
        return self.uri

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._check_open()
        self.flush()
        return self._run(fn, self.client, args, kwargs)

    def send(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._check_open()
        self._run(fn, _Unwaited(self.client, self._sent), args, kwargs)

    def flush(self) -> None:
        sent, self._sent = self._sent, []
        for batch, operations in sent:
            try:
                operations.wait()
            except Exception:  # noqa: BLE001 - MLflow keeps only its text: written again here, it raises with its cause
                self._run(type(self.client).log_batch, self.client, batch, {})

    def close(self) -> None:
        """Write what was sent; an error now was already reported by the search's last call, or is not news."""
        with contextlib.suppress(Exception):
            self.flush()

    def _check_open(self) -> None:
        if self.client is None:
            raise TrackingError("the tracking store is used before it was opened")

    def _run(self, fn: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return fn(client, *args, **kwargs)
        except Exception as err:
            raise store_failure(err, self.uri) from err


class _Unwaited:
    """The client as a sent write sees it: ``log_batch`` hands its batch to MLflow's asynchronous logging and
    returns at once; every other method is the client's own (and waits)."""

    def __init__(self, client: Any, sent: list[tuple[tuple, Any]]) -> None:
        self._client = client
        self._sent = sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        batch = (run_id, list(metrics), list(params), list(tags))
        self._sent.append((batch, self._client.log_batch(*batch, synchronous=False)))


def store_failure(err: Exception, uri: str | None) -> Exception:
    """``err`` as a :class:`MachineError` naming the store when the machine or the store caused it (a full disk,
    a read-only database, a tracking server gone), else ``err`` itself (a bug, or a user's mistake)."""
    if isinstance(err, (MachineError, TrackingError)) or (reason := machine_failure(err)) is None:
        return err
    return MachineError(f"the tracking store {uri or 'mlruns/mlflow.db'} failed: {reason}")

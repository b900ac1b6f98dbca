"""Where a search's MLflow client lives: in this process, or in a process of its own.

Every write to the tracking store goes through :meth:`Store.call`: ``store.call(fn, *args)`` runs
``fn(client, *args)`` next to the client and returns what ``fn`` returns (plain values, not MLflow entities).
The functions are module-level functions of :mod:`hpsearch.tracking`, :mod:`hpsearch.history` and
:mod:`hpsearch.publish`, so they travel to another process by name.

Why a process of its own (:class:`StoreProcess`): MLflow's import and the opening of its SQL store cost about
2 s of Python on 2 cores (``import mlflow`` 0.8 s, the SQLAlchemy store and its mappers 0.9 s), spent before
the first trial. ``hpsearch run`` forks the store's process before the driver loads torch and scikit-learn, so
MLflow loads on the core those imports leave idle, and the driver never imports MLflow at all. Calls are
synchronous and answered in order, so a run is written before the call that opens it returns, exactly as with
a client in this process (a resumed search relies on it). The process ignores Ctrl-C (the driver decides what
an interruption means and closes the runs through it) and ends when the driver closes it or exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from hpsearch.errors import TrackingError

__all__ = ["LocalStore", "Store", "StoreProcess", "open_store"]


class Store:
    """The search's MLflow client, wherever it is. Nothing is written before :meth:`connect`."""

    uri: str | None = None  # the URI in use, once connected

    def connect(self) -> str:
        """Open the store (the default one is created here) and check that it answers; returns its URI."""
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(client, *args, **kwargs)`` where the client is; its exceptions are raised here."""
        raise NotImplementedError

    def close(self) -> None:
        """Let the store go (a process of its own ends)."""


class LocalStore(Store):
    """The client in this process: for library callers, tests, and wherever forking is not safe."""

    def __init__(self, tracking_uri: str | None = None, client: Any = None) -> None:
        self.requested_uri = tracking_uri
        self.client = client
        if client is not None:  # an open client (tests, tools)
            self.uri = client.tracking_uri

    def connect(self) -> str:
        if self.client is None:
            from hpsearch import tracking

            self.client, self.uri = tracking.connect(self.requested_uri)
        return self.uri

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.client is None:
            raise TrackingError("the tracking store is used before it was opened")
        return fn(self.client, *args, **kwargs)


class StoreProcess(Store):
    """The client in a forked process (see the module's docstring). Create it with :meth:`start`."""

    def __init__(self, tracking_uri: str | None) -> None:
        self._conn, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("fork")
        self._process = context.Process(target=_serve, args=(child, self._conn, tracking_uri), name="hpsearch-store",
                                        daemon=True)
        self._process.start()
        child.close()
        self._sequence = 0

    @classmethod
    def start(cls, tracking_uri: str | None) -> Store:
        """A store in its own process where forking is safe and pays (POSIX, MLflow not loaded yet, no Ray);
        elsewhere a :class:`LocalStore`."""
        ray = sys.modules.get("ray")
        if os.name != "posix" or "mlflow" in sys.modules or (ray is not None and ray.is_initialized()):
            return LocalStore(tracking_uri)
        sys.stdout.flush(), sys.stderr.flush()  # nothing buffered is written twice
        return cls(tracking_uri)

    def connect(self) -> str:
        if self.uri is None:
            self.uri = self._request(_CONNECT, (), {})
        return self.uri

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.uri is None:
            raise TrackingError("the tracking store is used before it was opened")
        return self._request(fn, args, kwargs)

    def _request(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> Any:
        self._sequence += 1
        try:
            self._conn.send((self._sequence, fn, args, kwargs))
            while True:
                sequence, ok, value = self._conn.recv()
                if sequence == self._sequence:  # an older answer belongs to a call that Ctrl-C abandoned
                    break
        except (EOFError, OSError):
            raise TrackingError("the tracking store's process ended unexpectedly: the search cannot record "
                                "its trials") from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """End the process: at once when it was never used (the search stopped on bad input), else once it has
        answered every call (it has: calls are synchronous)."""
        if self.uri is None:
            self._process.terminate()
        elif self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
        self._process.join(timeout=30)
        self._conn.close()


def open_store(tracking_uri: str | None, *, own_process: bool) -> Store:
    """The store for one search: in a process of its own when asked and safe, else in this one."""
    return StoreProcess.start(tracking_uri) if own_process else LocalStore(tracking_uri)


# ------------------------------------------------------------------------------------- the store's process
_CONNECT = "connect"
_PARENT_CHECK_S = 1.0


def _serve(conn: Connection, drivers_end: Connection, tracking_uri: str | None) -> None:
    """The store's process: load MLflow and the SQL store's code, then answer calls in order until told to end."""
    driver = os.getppid()
    drivers_end.close()  # so that the pipe reads as closed once the driver is gone
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up(tracking_uri)
    from hpsearch import tracking

    client = None
    while True:
        try:
            if not conn.poll(_PARENT_CHECK_S):
                if os.getppid() != driver:
                    break  # the driver was killed (a forked drawer may still hold the pipe open)
                continue
            request = conn.recv()
        except (EOFError, OSError):
            break  # the driver is gone
        if request is None:
            break
        sequence, fn, args, kwargs = request
        try:
            if fn == _CONNECT:
                client, value = tracking.connect(tracking_uri)
            else:
                value = fn(client, *args, **kwargs)
            answer = (sequence, True, value)
        except BaseException as err:  # noqa: BLE001 - every error goes back to the caller
            answer = (sequence, False, err)
        if not _answer(conn, answer):
            break
    conn.close()
    os._exit(0)  # no teardown of MLflow's modules: every call has been committed


def _answer(conn: Connection, answer: tuple) -> bool:
    """Send one answer; an error that does not pickle goes back as a TrackingError with its text."""
    try:
        conn.send(answer)
    except (OSError, EOFError):
        return False  # the driver is gone
    except Exception:  # noqa: BLE001 - a value or an exception that does not pickle
        sequence, _ok, value = answer
        conn.send((sequence, False, TrackingError(f"{type(value).__name__}: {value}")))
    return True


def _warm_up(tracking_uri: str | None) -> None:
    """Load what the calls will need while the driver loads torch: MLflow, the SQL store, publishing."""
    import mlflow  # noqa: F401

    from hpsearch import history, publish, tracking  # noqa: F401

    if tracking_uri is None or tracking_uri.startswith("sqlite:"):
        import sqlalchemy.orm
        from mlflow.store.tracking import sqlalchemy_store  # noqa: F401

        sqlalchemy.orm.configure_mappers()

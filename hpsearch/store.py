"""Where a search's MLflow client lives: in this process, or in a process of its own.

Every write to the tracking store goes through :meth:`Store.call`: ``store.call(fn, *args)`` runs
``fn(client, *args)`` next to the client and returns what ``fn`` returns (plain values, not MLflow entities).
The functions are module-level functions of :mod:`hpsearch.tracking`, :mod:`hpsearch.history` and
:mod:`hpsearch.publish`, so they travel to another process by name.

Why a process of its own (:class:`StoreProcess`): in the driver, MLflow's import and the opening of its SQL
store cost 1.7 s of Python before the first trial (``import mlflow`` 0.8 s next to torch and pandas, the
SQLAlchemy store and its mappers 0.9 s). ``hpsearch run`` forks the store's process before the driver loads
torch and scikit-learn, so MLflow loads (with its own pandas: 3.6 s of CPU) on the core those imports leave
idle, and the driver never imports MLflow at all.

Calls run one at a time, in the order they were made. A call waits for its answer, so a trial's run is written
before the call that opens it returns (a resumed search relies on it) and a run shown RUNNING is one the search
still runs. Writes nobody waits for (a trial's metrics as it trains) are sent with :meth:`Store.send`, and the
driver goes on. The process ignores Ctrl-C (the driver decides what an interruption means and closes the runs
through it), finishes what it was sent, and ends when the driver closes it or is gone.
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

__all__ = ["LocalStore", "Store", "StoreProcess"]


class Store:
    """The search's MLflow client, wherever it is. Nothing is written before :meth:`connect`."""

    uri: str | None = None  # the URI in use, once connected

    def connect(self) -> str:
        """Open the store (the default one is created here) and check that it answers; returns its URI."""
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(client, *args, **kwargs)`` where the client is; its exceptions are raised here."""
        raise NotImplementedError

    def send(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Like :meth:`call`, for a write whose answer nobody waits for: it may still run when this returns.
        Calls run in the order they were made; an error of a sent one is raised by the next :meth:`call`."""
        self.call(fn, *args, **kwargs)

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
        self._sent_error: BaseException | None = None

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

    def send(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """The driver goes on while the store writes: a trial's metrics cost it no wait (on 2 busy cores, a round
        trip to a process that must first be scheduled takes tens of milliseconds)."""
        if self.uri is None:
            raise TrackingError("the tracking store is used before it was opened")
        self._request(fn, args, kwargs, wait=False)

    def _request(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict, *, wait: bool = True) -> Any:
        self._sequence += 1
        try:
            self._conn.send((self._sequence, wait, fn, args, kwargs))
            if not wait:
                return None
            while True:
                sequence, waited, ok, value = self._conn.recv()
                if sequence == self._sequence:
                    break
                if not waited and self._sent_error is None:  # a sent call failed: raised now, the first one
                    self._sent_error = value
                # else: the answer to a call that Ctrl-C abandoned
        except (EOFError, OSError):
            raise TrackingError("the tracking store's process ended unexpectedly: the search cannot record "
                                "its trials") from None
        if self._sent_error is not None:
            error, self._sent_error = self._sent_error, None
            raise error
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """End the process: at once when it was never used (the search stopped on bad input), else once it has
        answered every call before this one."""
        if self.uri is None:
            self._process.terminate()
        elif self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
        self._process.join(timeout=30)
        self._conn.close()


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
        sequence, wait, fn, args, kwargs = request
        try:
            if fn == _CONNECT:
                client, value = tracking.connect(tracking_uri)
            else:
                value = fn(client, *args, **kwargs)
            answer = (sequence, wait, True, value)
        except BaseException as err:  # noqa: BLE001 - every error goes back to the caller
            answer = (sequence, wait, False, err)
        if (wait or not answer[2]) and not _answer(conn, answer):  # a sent call is answered only when it fails
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
        sequence, wait, _ok, value = answer
        conn.send((sequence, wait, False, TrackingError(f"{type(value).__name__}: {value}")))
    return True


def _warm_up(tracking_uri: str | None) -> None:
    """Load what the calls will need while the driver loads torch: MLflow, the SQL store, publishing."""
    import mlflow  # noqa: F401

    from hpsearch import history, publish, tracking  # noqa: F401

    if tracking_uri is None or tracking_uri.startswith("sqlite:"):
        import sqlalchemy.orm
        from mlflow.store.tracking import sqlalchemy_store  # noqa: F401

        sqlalchemy.orm.configure_mappers()

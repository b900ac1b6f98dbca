"""Where a search's MLflow store is (``--tracking-uri``, ``MLFLOW_TRACKING_URI``, ``./mlruns``), how it is opened,
and where its client lives: in this process, or in a process of its own.

Every write to the tracking store goes through :meth:`Store.call`: ``store.call(fn, *args)`` runs
``fn(client, *args)`` next to the client and returns what ``fn`` returns (plain values, not MLflow entities).
The functions are module-level functions (of :mod:`hpsearch.tracking.tracker`, :mod:`hpsearch.tracking.reader`,
:mod:`hpsearch.results.publish`), so they travel to another process by name.

Why a process of its own (:class:`StoreProcess`): in the driver, MLflow's import and the opening of its SQL
store cost 1.7 s of Python before the first trial (``import mlflow`` 0.8 s next to torch and pandas, the
SQLAlchemy store and its mappers 0.9 s). ``hpsearch run`` forks the store's process before the driver loads
torch and scikit-learn, so MLflow loads (with its own pandas: 3.6 s of CPU) on the core those imports leave
idle, and the driver never imports MLflow at all.

Calls run one at a time, in the order they were made. The driver waits only where it needs an answer now: a
:meth:`Store.call` waits for it; :meth:`Store.submit` hands a call over and the driver reads its answer later
(a trial's run id: the trial's writes name its run by the trial until then, and the search reads the ids once
its trials have ended); writes nobody waits for (a trial's metrics, its end) are sent with :meth:`Store.send`.
Answers are read as they arrive, whenever the driver sends a call, so that the unread ones never fill the
pipe. A round trip costs the driver 20-50 ms on 2 busy cores, more through a tracking server, and Ray Tune's
loop, which starts the next trial, would wait on it twice per trial.

The process ignores Ctrl-C and SIGTERM (the driver decides what an interruption means and closes the runs
through it), finishes what it was sent, and ends when the driver closes it or is gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from hpsearch import lifeline
from hpsearch.errors import HpsearchError, MachineError, TrackingError, machine_failure
from hpsearch.loading import imports_without_gc
from hpsearch.tracking.connection import connect, give_up_retries

if TYPE_CHECKING:
    pass

__all__ = ["LocalStore", "Pending", "Store", "StoreProcess", "store_failure"]


class Pending:
    """The answer to a :meth:`Store.submit`: :meth:`result` waits for it (its exception is raised there)."""

    def __init__(self, read: Callable[[], Any], arrived: Callable[[], bool] | None = None) -> None:
        self._read = read
        self._arrived = arrived  # whether the answer is here already (reading it then waits for nothing)
        self._done = False
        self._value: Any = None

    @classmethod
    def answered(cls, value: Any) -> Pending:
        """An answer already at hand (a store in this process)."""
        pending = cls(lambda: value)
        pending._value, pending._done = value, True
        return pending

    def done(self) -> bool:
        """Whether :meth:`result` returns at once."""
        return self._done or (self._arrived is not None and self._arrived())

    def result(self) -> Any:
        if not self._done:
            self._value, self._done = self._read(), True
        return self._value


class Store:
    """The search's MLflow client, wherever it is. Nothing is written before :meth:`connect`."""

    uri: str | None = None  # the URI in use, once connected

    def connect(self) -> str:
        """Open the store (the default one is created here) and check that it answers; returns its URI."""
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(client, *args, **kwargs)`` where the client is; its exceptions are raised here."""
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        """Like :meth:`call`, but the answer is read when needed: ``store.submit(fn, ...).result()``."""
        return Pending.answered(self.call(fn, *args, **kwargs))

    def send(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Like :meth:`call`, for a write whose answer nobody waits for: it may still run when this returns.
        Calls run in the order they were made; an error of a sent one is raised by the next answer read
        (:meth:`call`, :meth:`Pending.result`)."""
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
            self.client, self.uri = connect(self.requested_uri)
        return self.uri

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.client is None:
            raise TrackingError("the tracking store is used before it was opened")
        try:
            return fn(self.client, *args, **kwargs)
        except Exception as err:
            raise store_failure(err, self.uri) from err


class StoreProcess(Store):
    """The client in a forked process (see the module's docstring). Create it with :meth:`start`."""

    def __init__(self, tracking_uri: str | None, preload: tuple[str, ...] = ()) -> None:
        self._conn, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("fork")
        self._process = context.Process(target=_serve, args=(child, self._conn, tracking_uri, os.getpid(), preload),
                                        name="hpsearch-store", daemon=True)
        self._process.start()
        child.close()
        self._sequence = 0
        self._sent_error: BaseException | None = None
        self._submitted: set[int] = set()  # submitted calls whose answer has not been read yet
        self._answers: dict[int, tuple[bool, Any]] = {}  # answers read while waiting for another one

    @classmethod
    def start(cls, tracking_uri: str | None, preload: tuple[str, ...] = ()) -> Store:
        """A store in its own process where forking is safe and pays (POSIX, MLflow not loaded yet, no Ray);
        elsewhere a :class:`LocalStore`. ``preload`` names the modules whose functions it will run: imported
        (and their ``warm_up()`` run, where they have one) while the driver loads torch."""
        ray = sys.modules.get("ray")
        if os.name != "posix" or "mlflow" in sys.modules or (ray is not None and ray.is_initialized()):
            return LocalStore(tracking_uri)
        sys.stdout.flush(), sys.stderr.flush()  # nothing buffered is written twice
        return cls(tracking_uri, preload)

    def connect(self) -> str:
        if self.uri is None:
            self.uri = self._request(_CONNECT, (), {})
        return self.uri

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._request(fn, args, kwargs)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        sequence = self._post(fn, args, kwargs, wait=True)
        self._submitted.add(sequence)
        return Pending(lambda: self._answer_to(sequence), lambda: self._drain() or sequence in self._answers)

    def send(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """The driver goes on while the store writes (see the module's docstring)."""
        self._post(fn, args, kwargs, wait=False)

    def _request(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> Any:
        return self._answer_to(self._post(fn, args, kwargs, wait=True))

    def _post(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict, *, wait: bool) -> int:
        if self.uri is None and fn != _CONNECT:
            raise TrackingError("the tracking store is used before it was opened")
        self._drain()
        self._sequence += 1
        try:
            self._conn.send((self._sequence, wait, fn, args, kwargs))
        except (EOFError, OSError):
            raise _process_gone() from None
        return self._sequence

    def _drain(self) -> None:
        """Read the answers that have arrived."""
        while self._conn.poll():
            self._read_answer(None)

    def _read_answer(self, sequence: int | None) -> None:
        """Read the next answer: the one to ``sequence``, or to a submitted call (kept for later), or a sent call's
        error (raised at the next answer read)."""
        try:
            answered, waited, ok, value = self._conn.recv()
        except (EOFError, OSError):
            raise _process_gone() from None
        if not waited:  # a sent call failed: raised at the next answer read, the first one
            self._sent_error = self._sent_error or _delivered(value, late=True)
        elif answered == sequence or answered in self._submitted:
            self._answers[answered] = (ok, value)
        # else: the answer to a call that Ctrl-C abandoned

    def _answer_to(self, sequence: int) -> Any:
        """Read answers in order up to the one to ``sequence``; those to submitted calls are kept for later."""
        while sequence not in self._answers:
            self._read_answer(sequence)
        if self._sent_error is not None:  # this call's answer stays for a later read
            error, self._sent_error = self._sent_error, None
            raise error
        ok, value = self._answers.pop(sequence)
        self._submitted.discard(sequence)
        if not ok:
            raise _delivered(value, late=False)
        return value

    def close(self) -> None:
        """End the process: at once when it was never used (the search stopped on bad input), else once it has
        answered every call before this one."""
        if self.uri is None:
            self._process.kill()  # it has written nothing; SIGTERM it ignores (see _serve)
        elif self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
        deadline = time.monotonic() + _CLOSE_S
        with contextlib.suppress(EOFError, OSError):
            while self._process.is_alive() and time.monotonic() < deadline:
                if self._conn.poll(0.1):
                    self._conn.recv()  # an answer nobody waits for now: the store ends once all are read
        self._process.join(timeout=max(0.0, deadline - time.monotonic()))
        self._conn.close()


def _process_gone() -> MachineError:
    return MachineError("the tracking store's process ended unexpectedly: the search cannot record its trials")


def store_failure(err: Exception, uri: str | None) -> Exception:
    """``err`` as a :class:`MachineError` naming the store when the machine or the store caused it (a full disk,
    a read-only database, a tracking server gone), else ``err`` itself (a bug, or a user's mistake).

    A tracking server that failed every try of a request is not waited for as long again (:func:`give_up_retries`).
    """
    if isinstance(err, (MachineError, TrackingError)) or (reason := machine_failure(err)) is None:
        return err
    if uri and uri.startswith(("http://", "https://")):
        give_up_retries()
    return MachineError(f"the tracking store {uri or 'mlruns/mlflow.db'} failed: {reason}")


# ------------------------------------------------------------------------------------- the store's process
_CONNECT = "connect"
_PARENT_CHECK_S = 1.0
_CLOSE_S = 30.0  # how long closing waits for the store to write what it was sent


def _serve(conn: Connection, drivers_end: Connection, tracking_uri: str | None, driver: int,
           preload: tuple[str, ...]) -> None:
    """The store's process: load MLflow and the SQL store's code, then answer calls in order until told to end.

    Answers leave through :class:`_Answers`, a thread, so that this loop never waits for the driver to read them:
    when a tracking server goes away, every queued write fails at once and each failure is an answer, while the
    driver may be blocked sending a large call (a model) that only this loop can read.

    A killed ``driver`` (its pid read before the fork) cannot close it: the calls it sent are written, then the
    process ends (a forked drawer may still hold the pipe open, so the pipe's end-of-file may never come).
    """
    drivers_end.close()  # so that the pipe reads as closed once the driver is gone
    for stop in (signal.SIGINT, signal.SIGTERM):  # the driver decides what Ctrl-C or a batch system's TERM means
        signal.signal(stop, signal.SIG_IGN)
    with imports_without_gc():
        _warm_up(tracking_uri, preload)

    answers = _Answers(conn)
    client = None
    failed: MachineError | None = None  # the store's first failure (a server gone): later errors follow from it
    while not answers.driver_gone:
        try:
            if not conn.poll(_PARENT_CHECK_S):
                if lifeline.parent_gone(driver):
                    break
                continue
            request = conn.recv()
        except (EOFError, OSError):
            break  # the driver is gone
        if request is None:
            break
        sequence, wait, fn, args, kwargs = request
        try:
            if fn == _CONNECT:
                client, value = connect(tracking_uri)
            else:
                value = fn(client, *args, **kwargs)
            answer = (sequence, wait, True, value)
        except BaseException as err:  # noqa: BLE001 - every error goes back to the caller
            if isinstance(err, Exception):  # the machine's failures named as such (a full disk, a server gone)
                err = store_failure(err, client.tracking_uri if client else tracking_uri)
                if isinstance(err, MachineError):
                    failed = failed or err
                elif failed is not None and not isinstance(err, HpsearchError):
                    err = failed  # a consequence (a write to a run whose opening failed), not a bug of its own
            answer = (sequence, wait, False, _failure(err, fn, args, kwargs))
        if wait or not answer[2]:  # a sent call is answered only when it fails
            answers.put(answer)
    answers.close(driver)
    conn.close()
    os._exit(0)  # no teardown of MLflow's modules: every call has been committed


class _Answers:
    """The store's answers, sent in order by a thread of their own (see :func:`_serve`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self.driver_gone = False
        self._thread = threading.Thread(target=self._send_all, name="hpsearch-store-answers", daemon=True)
        self._thread.start()

    def put(self, answer: tuple) -> None:
        self._queue.put(answer)

    def close(self, driver: int) -> None:
        """Wait until every answer is sent, or the ``driver`` is gone (a forked drawer may hold the pipe open, so
        an answer to a dead driver could wait for good)."""
        self._queue.put(None)
        while self._thread.is_alive() and not lifeline.parent_gone(driver):
            self._thread.join(_PARENT_CHECK_S)

    def _send_all(self) -> None:
        while (answer := self._queue.get()) is not None:
            if not _answer(self._conn, answer):
                self.driver_gone = True
                return


def _answer(conn: Connection, answer: tuple) -> bool:
    """Send one answer; False when the driver is gone."""
    try:
        conn.send(answer)
    except (OSError, EOFError):
        return False
    except Exception as err:  # noqa: BLE001 - a value that does not pickle
        sequence, wait, _ok, _value = answer
        failure = RuntimeError(f"the tracking store's answer cannot be sent back: {type(err).__name__}: {err}")
        conn.send((sequence, wait, False, (failure, "an answer", traceback.format_exc())))
    return True


class RemoteTraceback(Exception):
    """The traceback of an error raised in the store's process, shown as the cause of the error raised here."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


def _failure(err: BaseException, fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> tuple:
    """What goes back for a call that raised: the error (one that pickles), the call, and the traceback."""
    remote = traceback.format_exc()
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # noqa: BLE001 - an exception that does not travel: its type and text do
        err = RuntimeError(f"{type(err).__module__}.{type(err).__name__}: {err}")
    return err, _describe(fn, args, kwargs), remote


def _describe(fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> str:
    """``module.function(arg, ...)`` with short arguments (a run id, a name), long ones elided."""
    name = fn if isinstance(fn, str) else f"{fn.__module__}.{fn.__qualname__}"
    shown = [_short(value) for value in args] + [f"{key}={_short(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"<{type(value).__name__}>"


def _delivered(failure: tuple, *, late: bool) -> BaseException:
    """The store process's error, to raise here: with its remote traceback as its cause and a note naming the call
    (and, for a call sent earlier whose error arrives with a later answer, saying so). A user's mistake
    (:class:`HpsearchError`, one line on the command line) is raised as it is."""
    err, call, remote = failure
    if isinstance(err, HpsearchError):
        return err
    err.__cause__ = RemoteTraceback(remote)
    when = "sent earlier without waiting for its answer; reported at the next call" if late else "called"
    err.add_note(f"raised in the tracking store's process by {call} ({when})")
    return err


def _warm_up(tracking_uri: str | None, preload: tuple[str, ...]) -> None:
    """Load what the calls will need while the driver loads torch: MLflow, the SQL store, the callers' modules."""
    import importlib

    import mlflow  # noqa: F401

    for module in preload:  # a module may have work of its own to do ahead (its ``warm_up()``)
        warm_up = getattr(importlib.import_module(module), "warm_up", None)
        if callable(warm_up):
            with contextlib.suppress(Exception):  # ahead of time only: the work is done again when needed
                warm_up()

    if tracking_uri is None or tracking_uri.startswith("sqlite:"):
        import sqlalchemy.orm
        from mlflow.store.tracking import sqlalchemy_store  # noqa: F401

        sqlalchemy.orm.configure_mappers()

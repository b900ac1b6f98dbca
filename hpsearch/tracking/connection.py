"""Where a search's MLflow store is and how it is opened: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI`` (as
MLflow's own tools read it), else an SQLite store in ``./mlruns`` (WAL mode, artifacts beside it, its tables
created under a file lock); a tracking server is checked to answer before anything is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import MachineError, TrackingError, machine_failure

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["DEFAULT_STORE", "check_store_exists", "connect", "default_tracking_uri", "experiment_id",
           "registry_uri_for", "tracking_uri_from"]

# schema creation on a new store, and the wait for a model version a search registers, are not news
for _noisy in ("alembic", "mlflow.store.db.utils", "mlflow.store.model_registry.abstract_store"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
# MLflow logs the traceback of a database error before it raises it; hpsearch reports the error in one line.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


DEFAULT_STORE = Path("mlruns")


SQLITE_BUSY_TIMEOUT_S = 60


_QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
#: How long a search waits for a tracking server that stopped answering, unless the user set MLflow's own
#: variables: each request is tried 5 times over about 30 s (MLflow's defaults: 8 times over about 4 minutes,
#: each try waiting up to 120 s for an answer).
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_MLFLOW_BACKOFF_DEFAULTS = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1"}
_URLLIB3_BACKOFF_MAX_S = 120  # urllib3's cap on one wait between two tries


def tracking_uri_from(tracking_uri: str | None) -> str | None:
    """The store a command uses: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI`` as MLflow's own tools read it,
    else None (the local store in ./mlruns)."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def registry_uri_for(tracking_uri: str) -> str:
    """The model registry: ``MLFLOW_REGISTRY_URI`` where set (as MLflow reads it), else the tracking store."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri


def default_tracking_uri(store: Path = DEFAULT_STORE) -> str:
    """``sqlite:///ABS/mlruns/mlflow.db``: the local store, an SQLite database beside its artifacts."""
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def connect(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    """A client for ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``, or the default local store), checked to answer.

    Returns the client and the URI it uses. The default store's folder is created here, not before:
    nothing is written until the space file and the data have been checked. The default SQLite store runs in
    WAL mode with a generous busy timeout, so two searches can write to it at once.
    """
    tracking_uri = tracking_uri_from(tracking_uri)
    if tracking_uri is None or tracking_uri.startswith("sqlite:"):
        _fast_wal_commits()
    if tracking_uri is None:
        tracking_uri = f"{default_tracking_uri()}?timeout={SQLITE_BUSY_TIMEOUT_S}"
        try:
            DEFAULT_STORE.mkdir(exist_ok=True)
            with _store_lock(DEFAULT_STORE):  # two searches starting at once must not both create the tables
                _enable_wal(DEFAULT_STORE / "mlflow.db")
                _check_reachable(tracking_uri)
        except (OSError, sqlite3.OperationalError) as err:  # a read-only folder, a full disk, no permission
            raise MachineError(f"cannot create or open the tracking store {DEFAULT_STORE.resolve()}: "
                               f"{machine_failure(err) or err}") from None
    else:
        _check_reachable(tracking_uri)
        if tracking_uri.startswith(("http://", "https://")):
            _bound_http_retries(tracking_uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri), tracking_uri


def _bound_http_retries(tracking_uri: str) -> None:
    """MLflow's retries of a tracking server, bounded (:data:`HTTP_RETRY_DEFAULTS` where the user set none), and
    said within seconds: the first retry prints one line naming the server, the settings and how long it lasts."""
    if _before_giving_up:  # an earlier search of this process gave up on its server: the user's setting again
        _set_env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", _before_giving_up.pop())
    for key, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # MLflow prints two links for every run it ends on a server; the search prints the one to its trials
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    _RetryNotice.install(tracking_uri)


def retry_budget() -> str:
    """How MLflow retries a request to a tracking server here, in words, with the variables that set it."""
    setting = {**_MLFLOW_BACKOFF_DEFAULTS, **HTTP_RETRY_DEFAULTS,
               **{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_HTTP_REQUEST_")}}
    retries, timeout = int(setting["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), float(setting["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    factor = float(setting["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    jitter = float(setting["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"])
    # urllib3 retries at once the first time, then waits factor * 2**(n-1) s plus up to `jitter` s (at most 120)
    waits = [0.0] + [min(_URLLIB3_BACKOFF_MAX_S, factor * 2 ** (n - 1) + jitter) for n in range(2, retries + 1)]
    return (f"{retries} more tries over about {sum(waits):.0f} s, each waiting up to {timeout:g} s for an answer "
            f"(MLFLOW_HTTP_REQUEST_MAX_RETRIES={retries}, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR={factor:g}, "
            f"MLFLOW_HTTP_REQUEST_TIMEOUT={timeout:g})")


class _RetryNotice(logging.Handler):
    """Says, once per outage, that the tracking server does not answer, and when it answers again.

    urllib3 logs each retry of MLflow's requests (a refused connection is retried at once, a silent server after
    MLFLOW_HTTP_REQUEST_TIMEOUT); during an outage, its debug line for each response says that one came back.
    """

    _installed: _RetryNotice | None = None
    _logger = logging.getLogger("urllib3.connectionpool")

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(logging.DEBUG)
        self.tracking_uri = tracking_uri
        self.announced = False

    @classmethod
    def install(cls, tracking_uri: str) -> None:
        if cls._installed is not None:
            cls._logger.removeHandler(cls._installed)
        cls._installed = cls(tracking_uri)
        cls._logger.addHandler(cls._installed)
        cls._logger.propagate = False  # urllib3's own line for every retry is not shown: this one line is

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.DEBUG:
            if self.announced and record.msg.startswith('%s://%s:%s "'):  # a response came back
                self.announced = False
                self._logger.setLevel(logging.NOTSET)
                print(f"the tracking server {self.tracking_uri} answers again", file=sys.stderr, flush=True)
            return
        if self.announced or not record.getMessage().startswith("Retrying"):
            return
        self.announced = True
        self._logger.setLevel(logging.DEBUG)  # until a response comes back
        reason = record.args[1] if isinstance(record.args, tuple) and len(record.args) > 1 else ""
        said = _first_words(reason)
        print(f"warning: the tracking server {self.tracking_uri} does not answer{f' ({said})' if said else ''}; "
              f"MLflow tries again: {retry_budget()}", file=sys.stderr, flush=True)


def give_up_retries() -> None:
    """After a request failed every try: the requests that close the search's runs are tried once each, not for
    as long again (a server that is back still takes them)."""
    if not _before_giving_up:
        _before_giving_up.append(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    if _RetryNotice._installed is not None:
        _RetryNotice._installed.announced = True  # said already


_before_giving_up: list[str | None] = []  # MLFLOW_HTTP_REQUEST_MAX_RETRIES as it was before give_up_retries


def _set_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _first_words(err: object) -> str:
    """What the system said (``Connection refused``), out of what urllib3 wraps it in; or ``timed out``."""
    seen: set[int] = set()
    errors = [err]
    while errors:
        current = errors.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if isinstance(current, ConnectionError) and str(current):  # the server closed the connection
            return str(current).splitlines()[0]
        errors += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
    return "timed out" if "timed out" in str(err) else ""


@contextlib.contextmanager
def _store_lock(store: Path) -> Iterator[None]:
    with open(store / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _enable_wal(database: Path) -> None:
    """WAL lets readers and one writer work at once; the setting is stored in the database file itself."""
    with sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_S) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


@functools.cache
def _fast_wal_commits() -> None:
    """Commit to SQLite stores in WAL mode without an fsync each time (``synchronous=NORMAL``).

    Every MLflow call is a transaction; with SQLite's default (FULL) each one waits for the disk: about 9 ms a
    call here against 3 ms. In WAL mode, NORMAL is what SQLite recommends: a commit survives the process being
    killed, and a power cut can lose the last commits but never corrupts the database. Stores not in WAL mode
    (where NORMAL could corrupt on a power cut) keep their setting.
    """
    import sqlalchemy  # MLflow's SQL stores load it anyway; a tracking server does not need it

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
    def _on_connect(connection: Any, _record: Any) -> None:
        if isinstance(connection, sqlite3.Connection):
            cursor = connection.cursor()
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


def _check_reachable(tracking_uri: str) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when the store does not answer."""
    from mlflow import MlflowClient

    saved = {k: os.environ.get(k) for k in _QUICK_HTTP}
    os.environ.update(_QUICK_HTTP)
    try:
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means the store is unusable
        lines = [line for line in str(err).splitlines() if line.strip()]
        message = lines[0][:300] if lines else type(err).__name__
        if tracking_uri.startswith("sqlite:") and (reason := machine_failure(err)) and "unable to open" not in reason:
            # a database that exists but refuses writes (read-only, a full disk): the machine, not the URI
            raise MachineError(f"tracking store {tracking_uri} cannot be written: {reason}") from None
        raise TrackingError(f"tracking store {tracking_uri} cannot be reached: {message}") from None
    finally:
        for key, value in saved.items():
            _set_env(key, value)


def experiment_id(client: MlflowClient, name: str, tracking_uri: str, *, create: bool = True) -> str:
    """The id of experiment ``name``, created when missing; with ``create=False`` (a resume) a missing experiment
    is an error.

    An SQLite store keeps its artifacts in ``artifacts/`` beside its database (``mlruns/artifacts`` for the
    default store): MLflow's own default, ``./mlruns`` in the working directory, would write where the user
    did not point (``MLFLOW_TRACKING_URI=sqlite:///elsewhere/m.db`` and still a ``./mlruns``).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        raise TrackingError(f"experiment {name!r} has no search to resume; run it without --resume")
    artifact_location = None
    database = tracking_uri.split("?")[0].removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and database not in ("", ":memory:"):
        artifact_location = (Path(database).parent / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def check_store_exists(tracking_uri: str | None) -> str:
    """For commands that only read or continue (``resume``): the store must be there already, as a connection
    would create it. Returns the store as the user knows it (``mlruns/mlflow.db``, or their URI)."""
    shown = tracking_uri or str(DEFAULT_STORE / "mlflow.db")
    database = (DEFAULT_STORE / "mlflow.db") if tracking_uri is None else _sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        raise TrackingError(f"no tracking store at {shown} in {Path.cwd()}: no search was run here "
                            "(run one with: python -m hpsearch run SPACE_FILE), or pass --tracking-uri")
    return shown


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for other stores and in-memory databases)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?")[0]
    return Path(path) if path and path != ":memory:" else None

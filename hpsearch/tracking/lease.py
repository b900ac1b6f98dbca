"""Which process runs a search: a lease on its parent run, so that two processes never run one search at once.

Each ``run`` and ``resume`` of a search is a *session*. A session claims the search by logging the param
``hpsearch.session.N`` on the parent run, N one more than the sessions before it, its value naming the process
(host, pid, start) and what this session was asked for (``num_samples``, ``time_budget``). MLflow never lets a
param change its value, in an SQL store as on a tracking server, so of two processes that claim the same N only
one succeeds: the claim is atomic wherever the store is. The holder renews a heartbeat (the tag
``hpsearch.lease``) every :data:`HEARTBEAT_S` seconds from a thread beside the MLflow client, and marks it
released when the session ends.

A claim is refused while the latest session is alive: its last sign of life (its claim or its heartbeat) is
younger than :data:`STALE_S` and, on the same host, its process still runs. So a holder killed with SIGKILL is
taken over at once on its own machine (its pid is gone), and :data:`STALE_S` after its last heartbeat from
another machine. The functions that take a ``client`` run next to the MLflow client (``Store.call``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch import lifeline
from hpsearch.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["HEARTBEAT_S", "STALE_S", "SESSION_PREFIX", "TAG_LEASE", "Session", "SearchHeld", "claim",
           "holder_of", "latest_session", "me", "refuse_if_held", "release", "sessions"]

SESSION_PREFIX = "hpsearch.session."  # + N: a param per session of the search
TAG_LEASE = "hpsearch.lease"  # the latest session's heartbeat
HEARTBEAT_S = 10.0
STALE_S = 120.0


class SearchHeld(TrackingError):
    """The search is being run by another process (one line, exit code 2)."""


@dataclass(frozen=True)
class Session:
    """One run of the command on a search: who ran it and what it was asked for."""

    number: int
    host: str
    pid: int
    started_ms: int
    asked: dict[str, Any]

    def describe(self) -> str:
        return f"process {self.pid} on host {self.host}"


def me(asked: dict[str, Any] | None = None) -> dict[str, Any]:
    """This process, as its session's param records it (a nonce: two claims never log the same value)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started_ms": _now_ms(),
            "nonce": uuid.uuid4().hex[:8], "asked": asked or {}}


def sessions(params: dict[str, str]) -> list[Session]:
    """The sessions a parent run's params record, oldest first."""
    found = []
    for key, value in params.items():
        if key.startswith(SESSION_PREFIX) and key.removeprefix(SESSION_PREFIX).isdigit():
            try:
                data = json.loads(value)
                found.append(Session(int(key.removeprefix(SESSION_PREFIX)), str(data["host"]), int(data["pid"]),
                                     int(data["started_ms"]), dict(data.get("asked") or {})))
            except (ValueError, KeyError, TypeError):
                continue  # not written by hpsearch: ignored
    return sorted(found, key=lambda s: s.number)


def latest_session(params: dict[str, str]) -> Session | None:
    found = sessions(params)
    return found[-1] if found else None


def holder_of(params: dict[str, str], tags: dict[str, str],
              claimant: int | None = None) -> tuple[Session, float] | None:
    """The session that holds the search now, and how many seconds ago it was last heard of; None when free.

    ``claimant``: the pid of the process that asks to claim it (a holder with that pid on this host is gone).
    """
    session = latest_session(params)
    if session is None:
        return None
    heard_ms = session.started_ms
    try:
        lease = json.loads(tags.get(TAG_LEASE, "{}"))
    except ValueError:
        lease = {}
    if lease.get("session") == session.number:
        if lease.get("released"):
            return None
        heard_ms = max(heard_ms, int(lease.get("renewed_ms", 0)))
    ago = (_now_ms() - heard_ms) / 1000
    here = session.host == socket.gethostname()
    if ago > STALE_S or (here and (session.pid == claimant or not lifeline.alive(session.pid))):
        return None
    return session, max(0.0, ago)


def claim(client: MlflowClient, run_id: str, holder: dict[str, Any], *, what: str) -> int:
    """Claim the search for this process (a new session) and start its heartbeat; returns the session's number.

    Raises :class:`SearchHeld` while another process holds it, or when another claim won the same number.
    ``what`` names the search in the error (``search RUN_ID of experiment 'E'``).
    """
    from mlflow.exceptions import MlflowException

    run = client.get_run(run_id)
    refuse_if_held(run.data.params, run.data.tags, what, holder["pid"])
    number = (latest_session(run.data.params).number if sessions(run.data.params) else 0) + 1
    try:
        client.log_param(run_id, f"{SESSION_PREFIX}{number}", json.dumps(holder))
    except MlflowException:  # another process logged this session first
        run = client.get_run(run_id)
        refuse_if_held(run.data.params, run.data.tags, what, holder["pid"])
        raise SearchHeld(f"{what} was just claimed by another process; try again") from None
    hold(client, run_id, number)
    return number


def refuse_if_held(params: dict[str, str], tags: dict[str, str], what: str, claimant: int | None = None) -> None:
    """Raise :class:`SearchHeld`, naming the holder, while another process holds the search."""
    held = holder_of(params, tags, claimant)
    if held is not None:
        session, ago = held
        raise SearchHeld(f"{what} is running in {session.describe()} (heard from {ago:.0f}s ago): wait for it to "
                         f"end or stop it; a process that was killed is taken over {STALE_S:.0f}s after it was "
                         "last heard from (at once on its own host)")


# ------------------------------------------------------------------------------------------ the heartbeat
_beating: dict[str, threading.Event] = {}  # run id -> the event that stops its heartbeat


def hold(client: MlflowClient, run_id: str, number: int) -> None:
    """Write the heartbeat of session ``number`` now, then every :data:`HEARTBEAT_S` seconds until
    :func:`release` (or this process's end: a killed holder stops renewing)."""
    _write_lease(client, run_id, number)
    stop = threading.Event()
    _beating[run_id] = stop

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                _write_lease(client, run_id, number)
            except Exception:  # noqa: BLE001 - a store that fails now is reported by the search's own calls
                continue

    threading.Thread(target=beat, name="hpsearch-lease", daemon=True).start()


def release(client: MlflowClient, run_id: str, number: int) -> None:
    """Stop the heartbeat and mark the lease released: the search can be resumed at once."""
    stop = _beating.pop(run_id, None)
    if stop is not None:
        stop.set()
    _write_lease(client, run_id, number, released=True)


def _write_lease(client: MlflowClient, run_id: str, number: int, *, released: bool = False) -> None:
    lease = {"session": number, "host": socket.gethostname(), "pid": os.getpid(), "renewed_ms": _now_ms()}
    client.set_tag(run_id, TAG_LEASE, json.dumps({**lease, **({"released": True} if released else {})}))


def _now_ms() -> int:
    return int(time.time() * 1000)

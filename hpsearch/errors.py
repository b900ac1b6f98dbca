"""The exceptions hpsearch raises for mistakes a user can fix, and for failures of the machine.

The command line turns every :class:`HpsearchError` into one line on stderr and exit code 2, so a message must
say where the problem is (file, field) and what is allowed. A :class:`MachineError` (or an ``OSError``: a
folder that cannot be written, a full disk, denied permission, a tracking server gone) is one line and exit
code 3. Anything else that escapes is a bug in hpsearch: its traceback, and exit code 70.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence

__all__ = ["ClusterError", "ConfigError", "DataError", "HpsearchError", "MachineError", "NonFiniteLossError",
           "NotFoundError", "SpaceError", "TrackingError", "describe_os_error", "machine_failure", "nearest_name"]


class HpsearchError(Exception):
    """Root of the errors a user can fix; the CLI prints them as one line and exits with code 2."""


class SpaceError(HpsearchError):
    """A space file, or one of its fields, is not valid.

    Args:
        message: what is wrong and what is allowed.
        field: the dotted name of the field (``"params.lr"``), when one is to blame.
        path: the space file, filled in by :func:`hpsearch.space.search.load_space`.
    """

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None) -> None:
        self.message = message
        self.field = field
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.field) if p]
        return ": ".join([*parts, self.message])


class DataError(HpsearchError):
    """The data a space file points at cannot be loaded or does not fit the task."""


class TrackingError(HpsearchError):
    """The MLflow tracking store cannot be reached or used."""


class NotFoundError(HpsearchError):
    """An experiment, search, trial or model asked for is not in the tracking store (or has no result)."""


class ConfigError(HpsearchError):
    """An exported configuration file (``best.yaml``) or an input file for a model is missing or not valid."""


class ClusterError(HpsearchError):
    """A cluster (Ray, the Ray Jobs API, SLURM) cannot be used as asked: unreachable, unauthorised, or missing
    what a multi-node search needs (shared storage, a tracking server every node reaches)."""


class NonFiniteLossError(RuntimeError):
    """A trial's loss became NaN or infinite; the trial fails, the search goes on.

    Not an :class:`HpsearchError`: it is raised inside a trial, where Ray Tune records it as the trial's error.
    """


class MachineError(Exception):
    """The machine or a service failed a valid request: a folder that cannot be written, a full disk, denied
    permission, a tracking store that stopped answering. The CLI prints one line and exits with code 3.

    Not an :class:`HpsearchError`: the input was right, and running again once the machine is mended works.
    """


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError``: where (the file), what the system said, and its errno name."""
    name = errno.errorcode.get(err.errno or 0, "")
    where = ", ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    said = err.strerror or str(err) or type(err).__name__
    return f"{where + ': ' if where else ''}{said}{f' ({name})' if name else ''}"


# What SQLite says when its disk or its file refuses a write (an OperationalError: not an OSError).
_SQLITE_MACHINE_MESSAGES = ("disk is full", "readonly database", "disk i/o error", "unable to open database file")
_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"  # MLflow's error code for a store that failed under a valid call


def machine_failure(err: BaseException) -> str | None:
    """The one-line reason when ``err`` was caused by the machine or a store (disk, permission, network), else
    None. Follows the chain of causes, since MLflow wraps what the system or the HTTP client raised."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):  # also requests' ConnectionError and Timeout
            return describe_os_error(current) if current.errno else _first_line(current)
        text = _first_line(current)
        if type(current).__name__ == "OperationalError" and any(m in text.lower() for m in _SQLITE_MACHINE_MESSAGES):
            return text
        current = current.__cause__ or current.__context__
    if getattr(err, "error_code", None) == _UNAVAILABLE:
        return _first_line(err)
    return None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def nearest_name(name: str, known: Sequence[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The known name a typo most likely meant, for a "did you mean" (a field, a column, an experiment): a close
    spelling in any case (difflib), the initials of its words (``learning_rate`` -> ``lr``), or one of ``aliases``
    (a usual synonym); None when nothing is near."""
    import difflib

    by_lower = {str(k).lower(): str(k) for k in known}  # a column may be spelt Species, ID, ...
    lowered = name.lower()
    close = difflib.get_close_matches(lowered, list(by_lower), n=1, cutoff=0.6)
    if close:
        return by_lower[close[0]]
    initials = "".join(word[0] for word in lowered.replace("-", "_").split("_") if word)
    if len(initials) > 1 and initials in by_lower:
        return by_lower[initials]
    alias = (aliases or {}).get(lowered)
    return by_lower.get(alias) if alias else None

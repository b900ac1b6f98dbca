"""The exceptions hpsearch raises for mistakes a user can fix.

The command line turns every :class:`HpsearchError` into one line on stderr and exit code 2, so a message must
say where the problem is (file, field) and what is allowed. Anything else that escapes is a bug in hpsearch.
"""

from __future__ import annotations

__all__ = ["ClusterError", "ConfigError", "DataError", "HpsearchError", "NonFiniteLossError", "NotFoundError",
           "SpaceError", "TrackingError"]


class HpsearchError(Exception):
    """Root of the errors a user can fix; the CLI prints them as one line and exits with code 2."""


class SpaceError(HpsearchError):
    """A space file, or one of its fields, is not valid.

    Args:
        message: what is wrong and what is allowed.
        field: the dotted name of the field (``"params.lr"``), when one is to blame.
        path: the space file, filled in by :func:`hpsearch.space.load_space`.
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

"""Put on ``PYTHONPATH`` by the tests: record which process first imports each watched package.

Python imports ``sitecustomize`` at start-up in every process it starts (a forked process inherits it). With
``HPSEARCH_IMPORT_LOG`` set to a file and ``HPSEARCH_IMPORT_WATCH`` to package names (``mlflow,matplotlib``), a
finder in front of ``sys.meta_path`` appends ``PID PPID NAME`` to the file the first time a process imports one of
them, and finds nothing itself (the import goes on as usual). Observation only: no code of hpsearch is changed.
"""

import os
import sys

_LOG = os.environ.get("HPSEARCH_IMPORT_LOG")
_WATCHED = set(filter(None, os.environ.get("HPSEARCH_IMPORT_WATCH", "").split(",")))


class _ImportLog:
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname in _WATCHED:
            with open(_LOG, "a") as log:
                log.write(f"{os.getpid()} {os.getppid()} {fullname}\n")
        return None


if _LOG and _WATCHED:
    sys.meta_path.insert(0, _ImportLog())

"""What a search's later sessions read and write of its runs: a resume reopens the search (checked, then claimed
for its process) and reads its trials back; a continued search names the Ray folder it goes on in; a warm-started
one names its source. The functions run next to the MLflow client (:meth:`hpsearch.tracking.store.Store.call`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hpsearch.tracking import lease
from hpsearch.tracking.reader import ResumableSearch, find_resumable_search, read_trials
from hpsearch.tracking.schema import (
    BEST_KEYS,
    ENDED,
    METRIC_KEYS,
    TAG_RAY_EXPERIMENT,
    TAG_RAY_FIRST_TRIAL,
    TAG_WARM_START,
    Status,
    TrialRecord,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["find_resumable_search", "record_warm_start", "reopen_search", "set_ray_experiment", "trial_number",
           "trial_records"]


def trial_records(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """The trials an interrupted search already has, as records; those that did not end are running again.

    A kill between a trial's last batch (which tags it ended, after its model files) and the end of its run left
    the run RUNNING with everything else written: the run is ended here, as the close would have ended it.
    """
    records = []
    for record in read_trials(client, experiment_id, parent_run_id):
        if record.end_ms is None and record.status in ENDED:  # its run still RUNNING
            client.set_terminated(record.run_id, "FAILED" if record.status == Status.FAILED else "FINISHED")
        record.metrics = {k: v for k, v in record.metrics.items() if k in METRIC_KEYS or k in BEST_KEYS}
        if record.status not in ENDED:
            record.status = Status.RUNNING  # killed or left RUNNING: Ray Tune resumes it from its checkpoint
        records.append(record)
    return records


def reopen_search(client: MlflowClient, experiment_id: str, experiment: str, holder: dict[str, Any], *,
                  num_samples: int | None = None, more: bool = False) -> ResumableSearch:
    """The latest search of the experiment, checked (:func:`~hpsearch.tracking.reader.find_resumable_search`),
    claimed for this process (:func:`~hpsearch.tracking.lease.claim`) and reopened (RUNNING) to be continued.

    Nothing is written unless the search may be continued as asked and the claim succeeded.
    """
    found = find_resumable_search(client, experiment_id, experiment, num_samples=num_samples, more=more,
                                  claimant=holder["pid"])
    session = lease.claim(client, found.run_id, holder, what=f"search {found.run_id} of experiment {experiment!r}")
    client.update_run(found.run_id, status="RUNNING")
    return dataclasses.replace(found, session=session)


def record_warm_start(client: MlflowClient, run_id: str, source_run_id: str) -> None:
    """Name the search whose trials seeded this one's searcher (``warm_start``)."""
    client.set_tag(run_id, TAG_WARM_START, source_run_id)


def set_ray_experiment(client: MlflowClient, run_id: str, ray_experiment: str, first_trial: int) -> None:
    """Name the Ray Tune folder the search now continues in, and the first trial it holds (those before ran in
    an earlier folder: a resume keeps them whatever Ray's saved state of this one knows)."""
    client.set_tag(run_id, TAG_RAY_EXPERIMENT, ray_experiment)
    client.set_tag(run_id, TAG_RAY_FIRST_TRIAL, str(first_trial))


def trial_number(name: str) -> int:
    """The number in a trial's name (``trial_007`` -> 7); -1 for a name of another form."""
    digits = name.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else -1

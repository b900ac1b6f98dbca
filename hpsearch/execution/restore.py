"""Ray Tune's saved state of a killed search, checked and mended so that ``Tuner.restore`` can continue it.

Ray Tune saves a search in several files: a snapshot of its trials (``experiment_state-*.json``), the searcher's
state (``search_gen_state-*.json``, ``searcher-state-*.pkl``) and each trial's checkpoints. They are written
one after the other and copied to the experiment folder by a background thread, so a kill can leave them out
of step, or leave one cut short. What such a kill leaves is mended here, before Ray's own restore reads it.
Local and shared folders only: a search in an object store (``s3://...``) is restored as Ray saved it.

These files are Ray Tune's private format (no public API mends them), so every edit here first checks that the
installed Ray is the release hpsearch was tested on (:func:`hpsearch.upstream_internals.ray_is_tested`) and that
a file holds what is expected; otherwise nothing is changed and Ray restores the search as it saved it (which
may end it short of its trials, or fail on a file cut short). ``tests/test_upstream_internals.py`` checks the
format of the installed Ray.
"""

from __future__ import annotations

import json
import os
import pickletools
import shutil
import uuid
from pathlib import Path
from typing import Any

from hpsearch.training.fit import is_complete_checkpoint
from hpsearch.upstream_internals import ray_is_tested

__all__ = ["bring_back_checkpoint", "mend", "reconcile_searcher", "restorable", "set_aside_cut_saves"]

_UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def restorable(ray_path: str) -> bool:
    """Whether Ray Tune saved enough of this search to restore it (the tuner and a snapshot of its trials)."""
    from ray import tune

    if not tune.Tuner.can_restore(ray_path):
        return False
    if "://" in ray_path:
        return True
    return _whole(Path(ray_path) / "tuner.pkl") and any(Path(ray_path).glob("experiment_state-*.json"))


def set_aside_cut_saves(ray_path: str) -> list[str]:
    """Rename the files of Ray's latest saves that a kill cut short, so that Ray restores its last whole save.

    Ray names each save's files after the session that wrote them (the start time of that run of the search),
    and restores the newest. A kill while Ray was copying them leaves a file cut short, and Ray's restore
    would fail on it at every later resume. That session's files are kept as ``*.cut``; Ray then restores the
    save of the run before (or, if there is none, the search starts its trials afresh). Returns the renamed
    files' names.
    """
    if "://" in ray_path or not ray_is_tested():
        return []
    folder, renamed = Path(ray_path), []
    while saves := sorted(folder.glob("experiment_state-*.json")):
        session = saves[-1].name.removeprefix("experiment_state-").removesuffix(".json")
        files = [folder / name.format(session) for name in _SESSION_FILES]
        if all(_whole(path) for path in files if path.exists()):
            break
        for path in files:
            if path.exists():
                path.rename(path.with_name(path.name + ".cut"))
                renamed.append(path.name)
    return renamed


_SESSION_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl")


def _whole(path: Path) -> bool:
    """Whether a file Ray saved is whole: JSON that parses, or a pickle that runs to its end (read, not loaded)."""
    data = path.read_bytes()
    try:
        if path.name.startswith("experiment_state-"):
            json.loads(data)
        else:
            for _ in pickletools.genops(data):
                pass
    except ValueError:  # json.JSONDecodeError is one; a pickle cut short raises one too
        return False
    return bool(data)


def mend(ray_path: str, trials: list[Any]) -> None:
    """Make the saved state agree with ``trials``, the trials of the snapshot that Ray will restore."""
    if "://" in ray_path or not ray_is_tested():
        return
    for trial in trials:
        bring_back_checkpoint(trial.checkpoint)
    reconcile_searcher(Path(ray_path), trials)


def bring_back_checkpoint(checkpoint: Any | None) -> None:
    """Make the checkpoint (a ``ray.tune.Checkpoint``) that Ray's snapshot names exist again, if a kill left it
    deleted.

    Ray Tune deletes a trial's oldest checkpoint as soon as a newer one is registered (``num_to_keep``), and
    saves its snapshot of the trials a moment later: a kill in between leaves the snapshot naming a checkpoint
    that is gone, and the trial would fail on restore. Its newest whole checkpoint (the state it had reached)
    is copied under that name, so the trial resumes from there.
    """
    if checkpoint is None or checkpoint.filesystem.type_name != "local":
        return
    wanted = Path(checkpoint.path)
    if wanted.exists():
        return
    newest_first = sorted(wanted.parent.glob("checkpoint_*"), reverse=True)
    found = next((path for path in newest_first if is_complete_checkpoint(path)), None)
    if found is not None:
        shutil.copytree(found, wanted)


def reconcile_searcher(experiment_dir: Path, trials: list[Any]) -> None:
    """Make the searcher's saved count of trials, and of trials still running, agree with the snapshot's trials.

    Ray copies the snapshot of the trials and the searcher's state to the experiment folder in a background
    thread, while the search goes on; a kill in the middle of a copy, or a save during one, leaves one file
    newer than the other. When the searcher's file is the newer one, it counts trials that the snapshot (and
    so the restored search) does not have: Ray would consider them proposed, end the search short of its
    ``num_samples`` trials, and every later resume would end the same way. When it is the older one, Ray would
    propose more trials than ``num_samples``.
    """
    import ray.cloudpickle as cloudpickle

    saved = sorted(experiment_dir.glob("search_gen_state-*.json"))
    if not saved:
        return
    path = saved[-1]  # the one Ray restores: the names carry the session's start time
    state = cloudpickle.loads(path.read_bytes())
    if not isinstance(state, dict) or not isinstance(state.get("counter"), int):
        return  # not the format this was written for: Ray restores the searcher as it saved it
    changed = state["counter"] != len(trials)
    state["counter"] = len(trials)
    limiter = state.get("name:ConcurrencyLimiter")  # the running trials count against max_concurrent_trials
    if isinstance(limiter, dict) and "live_trials" in limiter:
        live = set(limiter["live_trials"]) & {t.trial_id for t in trials if t.status in _UNFINISHED}
        changed = changed or live != set(limiter["live_trials"])
        limiter["live_trials"], limiter["num_unfinished_live_trials"] = live, len(live)
    if changed:
        partial = path.with_name(f".{uuid.uuid4().hex}-{path.name}")  # written whole or not at all
        partial.write_bytes(cloudpickle.dumps(state))
        os.replace(partial, path)

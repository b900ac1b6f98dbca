"""A published model made of several trained networks: which they are, with what weight, and their average.

An ensemble's folder holds :data:`ENSEMBLE_FILE` and one folder per member, each a whole model (weights, spec,
its own ``preprocessing.json``), so members may differ in architecture and in how they read their input. A
single model's folder has no :data:`ENSEMBLE_FILE`: it is one member of weight 1.

Members are averaged in what they predict, not in their raw outputs: numbers in the target's units for a
regression, class probabilities for a classification (the label is then the most probable class).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ENSEMBLE_FILE", "combine", "members_of", "most_probable", "write_members"]

ENSEMBLE_FILE = "ensemble.json"
PROBABILITY = "probability_"


def members_of(directory: str | Path) -> list[tuple[Path, float]]:
    """Each member's folder and weight (the folder itself, weight 1, for a single model)."""
    directory = Path(directory)
    listed = directory / ENSEMBLE_FILE
    if not listed.is_file():
        return [(directory, 1.0)]
    members = json.loads(listed.read_text())["members"]
    return [(directory / member["folder"], float(member["weight"])) for member in members]


def write_members(directory: Path, members: Sequence[dict[str, Any]]) -> None:
    """Write :data:`ENSEMBLE_FILE`: one entry per member (``folder``, ``weight`` and what else says where it
    came from: the trial, its run)."""
    (Path(directory) / ENSEMBLE_FILE).write_text(json.dumps({"members": list(members)}, indent=2))


def combine(predictions: Sequence[pd.DataFrame], weights: Sequence[float], classes: Sequence[Any]) -> pd.DataFrame:
    """The weighted average of the members' predictions: frames of ``prediction`` and, for ``classes``,
    ``probability_<class>`` columns (no classes: a regression's numbers)."""
    first, total = predictions[0], float(sum(weights))
    columns = [f"{PROBABILITY}{c}" for c in classes] or ["prediction"]
    average = sum(w * p[columns].to_numpy(dtype=np.float64) for p, w in zip(predictions, weights, strict=True)) / total
    if not classes:
        return pd.DataFrame({"prediction": average[:, 0]}, index=first.index)
    result = pd.DataFrame({"prediction": most_probable(classes, average, first.index)})
    for i, column in enumerate(columns):
        result[column] = average[:, i]
    return result


def most_probable(classes: Sequence[Any], probabilities: np.ndarray, index: pd.Index) -> pd.Series:
    """Each row's most probable class, typed as the classes are (text, whole numbers): the type is read once
    from the classes, not from a million labels."""
    labels = pd.Series(list(classes)).take(probabilities.argmax(axis=1))
    return labels.set_axis(index)

"""What to do with each column of a table, decided once on the training split and applied to any rows later.

A careful analyst looks at each column before fitting anything: a row number or a name that differs in every row
is an id, not a feature; a date is worth its year, month, weekday and hour, not thousands of one-hot columns; a
constant or empty column carries nothing (and an empty one breaks the fitted medians); booleans are numbers; a
text column with very many values keeps its most frequent ones. :func:`plan_columns` makes those decisions on
the training rows and returns them as plain JSON data (the *plan*), with one sentence per decision for the user,
and one for each column it keeps that an analyst would question (it may be an id), with the ``drop`` that
leaves it out.
:func:`apply_plan` applies a plan to raw rows, at fit time and in the served model alike, so both see the same
columns. Pure pandas and numpy: the exported model loads this module without scikit-learn.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MAX_CATEGORIES", "OTHER", "apply_plan", "input_types", "plan_columns"]

#: A text column keeps at most this many values (the most frequent); the rest become :data:`OTHER`.
MAX_CATEGORIES = 30
#: The value that stands for every rarer value of a capped text column.
OTHER = "(other)"
#: Id detection needs this many training rows: in a handful of rows any text column may be all distinct.
MIN_ROWS_FOR_IDS = 20
#: A text column with distinct values in at least this share of the training rows is a name or an id.
NEARLY_ALL = 0.9
#: Date parts, in the order they become columns; each kept only where it varies in the training rows.
DATE_PARTS = ("year", "month", "dayofweek", "hour")

# A column named as ids and row numbers are: rownames, id, user_id, Unnamed: 0, index, ...
_ID_NAME = re.compile(r"(^|[^a-z])(id|ids|rownames|rowname|index|unnamed: \d+)$|^(id|no|nr|number)([^a-z]|$)", re.I)
# A date or a timestamp as tables write them: 2024-01-31, 31/01/2024, 2024-01-31 12:30[:00[.123]], ...
_DATE = re.compile(r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
                   r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?\s*$")


def plan_columns(train: pd.DataFrame, drop: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """Decide, from the training rows, what becomes of each column; return the plan and one line per decision.

    ``drop`` are columns the user named in the space file (they leak the target, say): dropped first.
    """
    plan: dict[str, Any] = {"inputs": [], "types": {}, "dates": {}, "booleans": [], "capped": {}, "examples": {}}
    notes: list[str] = []
    for name in train.columns:
        column = train[name]
        reason = _drop_reason(str(name), column, drop)
        if reason is None and _is_date(column):
            parts = _varying_parts(_to_datetime(column))
            if not parts:
                reason = "a date that is the same in every training row"
            else:
                plan["dates"][str(name)] = parts
                notes.append(f"date column {name}: turned into numbers ({', '.join(parts)})")
        if reason is not None:
            notes.append(f"dropped {name}: {reason}")
            continue
        plan["inputs"].append(str(name))
        plan["types"][str(name)] = _input_type(column, str(name) in plan["dates"])
        plan["examples"][str(name)] = _typical(column, plan["types"][str(name)])
        if str(name) not in plan["dates"] and (looks := _looks_like_an_id(str(name), column)) is not None:
            notes.append(f"kept {name} as {'a number' if plan['types'][str(name)] == 'double' else 'a feature'}, "
                         f"but it may be an id ({looks}): if it is, leave it out with drop=[{str(name)!r}]")
        if plan["types"][str(name)] == "boolean":
            plan["booleans"].append(str(name))
        elif plan["types"][str(name)] == "string" and str(name) not in plan["dates"]:
            counts = column.dropna().astype(str).value_counts()
            if len(counts) > MAX_CATEGORIES:  # the most frequent values seen more than once
                kept = [v for v in sorted(counts.index, key=lambda v: (-counts[v], v)) if counts[v] > 1]
                plan["capped"][str(name)] = kept[:MAX_CATEGORIES]
                notes.append(f"capped {name}: {len(counts)} distinct values, the {len(kept[:MAX_CATEGORIES])} most "
                             f"frequent kept, the rest as {OTHER!r}")
    return plan, notes


def apply_plan(plan: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the preprocessing sees: the plan's inputs, dates as numbers, booleans as 0/1, text capped.

    Columns the plan does not name are ignored; a missing input column is a ``KeyError`` naming it.
    """
    out: dict[str, pd.Series] = {}
    for name in plan["inputs"]:
        column = frame[name]
        if name in plan["dates"]:
            moments = _to_datetime(column)
            for part in plan["dates"][name]:
                out[f"{name}_{part}"] = getattr(moments.dt, part).astype("float64")
        elif name in plan["booleans"]:
            out[name] = pd.Series(_each_value(column, _as_bool, np.nan).astype("float64"), index=frame.index)
        elif name in plan["capped"]:
            kept = set(plan["capped"][name])
            out[name] = pd.Series(_each_value(column, lambda v, kept=kept: str(v) if str(v) in kept else OTHER,
                                                              np.nan),
                                  index=frame.index)
        elif plan["types"][name] == "string":
            out[name] = pd.Series(_each_value(column, lambda v: v, np.nan), index=frame.index)
        else:
            out[name] = pd.to_numeric(column, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def _each_value(column: pd.Series, function: Any, missing: Any) -> np.ndarray:
    """``function`` of each value of a column (``missing`` where it is missing), as an object array: worked out
    once per distinct value and spread to the rows by integer codes, so that a million rows of a few values
    cost one pointer each, not one Python object each."""
    codes, distinct = pd.factorize(column)  # missing as -1
    return np.array([*(function(value) for value in distinct), missing], dtype=object)[codes]


def input_types(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The raw columns the model reads with their MLflow type (``double``, ``string``, ``boolean``), in order."""
    return [(name, plan["types"][name]) for name in plan["inputs"]]


# ---------------------------------------------------------------------------------------------------- helpers
def _drop_reason(name: str, column: pd.Series, drop: list[str] | tuple[str, ...]) -> str | None:
    """Why a column is left out, or None to keep it (dates are decided by the caller)."""
    if name in drop:
        return "named in the space file's drop field"
    values = column.dropna()
    if values.empty:
        return "empty in the training split"
    if values.nunique() == 1:
        only = values.iloc[0]
        return f"a single value ({only.item() if isinstance(only, np.generic) else only!r}) in the training split"
    if len(column) < MIN_ROWS_FOR_IDS:
        return None
    distinct = values.nunique()
    every_row = distinct == len(column)
    whole = pd.api.types.is_integer_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if every_row and whole and (values.max() - values.min() < 3 * len(column) or _ID_NAME.search(name)):
        return "a distinct whole number in every row (an id)"
    if _is_text(column) and distinct >= NEARLY_ALL * len(column) and not _is_date(column):
        if every_row:
            return "a distinct value in every row (an id)"
        return f"a distinct value in almost every row ({distinct} of {len(column)}: a name or an id)"
    return None


def _looks_like_an_id(name: str, column: pd.Series) -> str | None:
    """Why a column kept as a feature may be an id after all (an analyst would ask), or None.

    Whole numbers distinct in almost every row (ids that repeat, as a patient's several samples), or a name
    that ids have (``ID``, ``customer_id``) whatever the values: :func:`_drop_reason` keeps both, since a
    count or a code can look the same.
    """
    if pd.api.types.is_bool_dtype(column):
        return None
    distinct, rows = column.dropna().nunique(), len(column)
    whole = pd.api.types.is_integer_dtype(column)
    if whole and rows >= MIN_ROWS_FOR_IDS and distinct >= NEARLY_ALL * rows:
        return f"{distinct} distinct whole numbers in {rows} training rows"
    if _ID_NAME.search(name):
        return f"named as ids are, {distinct} distinct values in {rows} training rows"
    return None


def _is_text(column: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) \
        and not pd.api.types.is_datetime64_any_dtype(column)


def _is_date(column: pd.Series) -> bool:
    """A datetime column, or text whose every value reads as a date (a number is never taken for a date)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return False
    values = column.dropna()
    if values.empty or not all(isinstance(v, str) and _DATE.match(v) for v in values):
        return False
    return bool(_to_datetime(values).notna().all())


def _to_datetime(column: pd.Series) -> pd.Series:
    """Dates as naive timestamps; a value that does not read as a date becomes missing (imputed later)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        moments = column
    else:
        moments = pd.to_datetime(column.astype(object).where(column.notna(), None), errors="coerce",
                                 format="mixed", utc=True)
    if getattr(moments.dt, "tz", None) is not None:
        moments = moments.dt.tz_localize(None)
    return moments


def _varying_parts(moments: pd.Series) -> list[str]:
    return [part for part in DATE_PARTS if getattr(moments.dt, part).dropna().nunique() > 1]


def _typical(column: pd.Series, kind: str) -> Any:
    """A value for the model's input example: the median of numbers, the most frequent of anything else."""
    values = column.dropna()
    if kind == "double":
        return float(values.median())
    value = values.astype(str).value_counts().index[0] if kind == "string" else values.value_counts().index[0]
    if kind == "boolean":
        return _as_bool(value) == 1.0
    return value.isoformat() if isinstance(value, pd.Timestamp) else value


def _input_type(column: pd.Series, is_date: bool) -> str:
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    if is_date:
        return "string"
    if pd.api.types.is_bool_dtype(column) or _all_bools(column):
        return "boolean"
    if pd.api.types.is_numeric_dtype(column):
        return "double"
    return "string"


def _all_bools(column: pd.Series) -> bool:
    """Text or objects that are all True / False (a boolean column with missing values reads as objects)."""
    if pd.api.types.is_numeric_dtype(column):
        return False
    values = column.dropna()
    return not values.empty and all(isinstance(v, (bool, np.bool_)) or str(v) in ("True", "False") for v in values)


def _as_bool(value: Any) -> float:
    if isinstance(value, str):
        return {"true": 1.0, "false": 0.0}.get(value.strip().lower(), np.nan)
    return float(bool(value))

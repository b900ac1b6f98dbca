"""How hpsearch writes numbers and trial tables, in one place, so that every command speaks with one voice.

``run``'s final table, ``best``, ``report`` and the progress lines all format values through :func:`number`
and :func:`cell`, and build the best-trials table with :func:`trials_table`: the same rounding (4 significant
digits), the same columns (``layers`` as ``35-27``, the hyperparameters that differ between the scored
trials), whether the trials come from the running search (typed values) or from MLflow (strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.tracking.schema import TrialRecord

__all__ = ["DEFAULT_TOP", "cell", "comparison_lines", "number", "text_table", "trials_table", "verdict"]

#: How many trials ``run``, ``resume``, ``best`` and ``report`` show by default (``--top``).
DEFAULT_TOP = 5


def number(value: float) -> str:
    """A metric or hyperparameter value: 4 significant digits (``0.005391``, ``0.9833``, ``1.2e-05``)."""
    return f"{value:.4g}"


def cell(value: Any) -> str:
    """One table cell: numbers as :func:`number` (also when MLflow gave them as strings), layer lists as
    ``35-27`` (``none`` for no hidden layer), anything else as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number(value)
    if isinstance(value, (list, tuple)):
        return "-".join(map(str, value)) or "none"
    text = str(value)
    try:
        parsed = float(text)
    except ValueError:
        return text
    return text if parsed.is_integer() and "." not in text and "e" not in text.lower() else number(parsed)


def trials_table(ranked: Sequence[TrialRecord], metric: str, top: int) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the best ``top`` trials, best first (their params typed, or MLflow's strings).

    The hyperparameter columns are those whose value differs between the scored trials (all of them when every
    trial has the same), so that ``run``, ``best`` and ``report`` of one search show the same columns.
    """
    from hpsearch.space import hyperparameters

    typed = [hyperparameters({k: v for k, v in t.params.items() if v is not None}) for t in ranked]
    keys = list(dict.fromkeys(k for h in typed for k in h))
    varying = [k for k in keys if len({cell(h.get(k)) for h in typed}) > 1] or keys
    header = ["rank", "trial", "status", metric, "epochs", *varying]
    rows = [[str(i + 1), t.name, t.status, number(t.value(metric)), str(t.epochs), *(cell(h.get(k)) for k in varying)]
            for i, (t, h) in enumerate(zip(ranked[:max(top, 1)], typed, strict=False))]
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The table as aligned text lines (two spaces between columns)."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]


def comparison_lines(models: Sequence[tuple[str, str, dict[str, float]]]) -> list[str]:
    """The models a search tested, one line each with its test metrics, and which is better: the search's model
    (the ensemble where there is one, else the best trial) or the default tree.

    ``models`` are ``(kind, label, test metrics without test_)``, as :func:`hpsearch.tracking.schema.tested_models`
    reads them from a parent run."""
    if not models:
        return []
    width = max(len(label) for _, label, _ in models)
    lines = ["on the test split (rows no trial saw):"]
    for _, label, figures in models:
        shown = "  ".join(f"{k}={number(v)}" for k, v in figures.items() if k != "loss")
        lines.append(f"  {label.ljust(width)}  {shown}")
    return lines + verdict(models)


def verdict(models: Sequence[tuple[str, str, dict[str, float]]]) -> list[str]:
    """One line: is the search's model ahead of the default tree, or does the tree win (said plainly)? On the test
    RMSE of a regression, the accuracy of a classification."""
    key = "rmse" if any("rmse" in figures for _, _, figures in models) else "accuracy"
    tree = [figures for kind, _, figures in models if kind == "tree" and key in figures]
    ours = [(label, figures) for kind, label, figures in models if kind != "tree" and key in figures]
    if not tree or not ours:
        return []
    label, figures = ours[-1]  # the ensemble when there is one: the model the search publishes
    mine, theirs = figures[key], tree[0][key]
    gap = abs(mine - theirs) / abs(theirs) if theirs else 0.0
    if mine == theirs:
        return [f"the search's model ties with the default tree: test {key} {number(mine)}"]
    if (mine < theirs) == (key == "rmse"):
        return [f"the search's model ({label}) is ahead of the default tree: test {key} {number(mine)} against "
                f"{number(theirs)} ({gap:.1%} better)"]
    return [f"the default tree wins on this table: test {key} {number(theirs)} against {number(mine)} for the "
            f"search's model ({label}, {gap:.1%} worse)"]

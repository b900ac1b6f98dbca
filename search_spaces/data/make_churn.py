"""Writes churn.csv, the small table behind search_spaces/churn.py (run once; the CSV is committed).

Numeric and categorical columns, with missing values in both, and a yes/no target that depends on them.
"""

from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(7)
n = 600
plan = rng.choice(["basic", "plus", "pro"], size=n, p=[0.5, 0.3, 0.2])
region = rng.choice(["north", "south", "east", "west"], size=n)
age = rng.normal(42, 12, size=n).round()
tenure = rng.exponential(24, size=n).round()
monthly = np.select([plan == "basic", plan == "plus"], [20, 35], 60) + rng.normal(0, 5, size=n)
score = -0.04 * tenure + 0.03 * (monthly - 35) - 0.02 * (age - 42) + 0.8 * (region == "south") + rng.normal(0, 0.7, n)
frame = pd.DataFrame({
    "age": age, "tenure_months": tenure, "monthly_fee": monthly.round(2), "plan": plan, "region": region,
    "churned": np.where(score > 0, "yes", "no"),
})
for column, fraction in (("age", 0.08), ("monthly_fee", 0.05), ("plan", 0.06), ("region", 0.04)):
    frame.loc[rng.random(n) < fraction, column] = np.nan
frame.to_csv(Path(__file__).with_name("churn.csv"), index=False)

"""Customer churn from a CSV file with numeric and text columns and missing values: a binary search.

Numeric columns are imputed (median) and standardised, text columns imputed and one-hot encoded, all fitted
on the training split only. The path is relative to this file.

    python -m hpsearch run search_spaces/churn.py
"""

from hpsearch import Search, choice, layers, loguniform, uniform

search = Search(
    data="csv:data/churn.csv",  # 600 customers; columns: age, tenure_months, monthly_fee, plan, region, churned
    target="churned",  # "yes" / "no": a binary task, inferred from the column
    params={
        "layers": layers(1, 2, units=(8, 64)),
        "lr": loguniform(1e-3, 3e-2),
        "dropout": uniform(0.0, 0.3),
        "optimizer": choice(["adam", "adamw"]),
    },
    num_samples=10,
    max_epochs=20,
    seed=1,
)

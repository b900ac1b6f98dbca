"""Diabetes progression (10 numeric features, a number to predict): a regression search.

    python -m hpsearch run search_spaces/diabetes.py
"""

from hpsearch import Search, asha, choice, loguniform

search = Search(
    data="sklearn:diabetes",  # 442 patients; the target is a disease-progression score
    task="regression",  # reports val_loss (MSE on the standardised target), val_rmse and val_mae
    params={
        "layers": choice([[32], [64, 32], [128, 64, 32]]),  # a choice of whole layer lists
        "lr": loguniform(1e-4, 1e-1),
        "weight_decay": loguniform(1e-6, 1e-2),
        "optimizer": choice(["adam", "sgd"]),
        "momentum": 0.9,  # used by sgd
    },
    metric="val_rmse",  # in the target's units
    num_samples=16,
    max_epochs=60,
    scheduler=asha(grace_period=5, reduction_factor=3),  # no trial is stopped before its 5th epoch
)

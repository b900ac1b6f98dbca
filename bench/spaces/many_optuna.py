"""The search of ../shared/reference/optuna_many.py as a space file (bench/hand_written.py times both).

1,000 small trials on breast cancer: 1-2 hidden layers of 8..64 units (log), lr 1e-3..1e-1 (log), dropout
0..0.3, batch 64, Adam, 5 epochs, one thread; TPE and successive halving (Optuna's ``SuccessiveHalvingPruner()``:
first rung at epoch 1, a quarter kept) on the validation loss; the script's 80 % of rows to train on.
"""

from hpsearch import Search, asha, layers, loguniform, uniform

search = Search(
    data="sklearn:breast_cancer",
    params={
        "layers": layers(1, 2, units=(8, 64)),
        "lr": loguniform(1e-3, 1e-1),
        "dropout": uniform(0.0, 0.3),
        "batch_size": 64,
        "optimizer": "adam",
    },
    metric="val_loss",
    mode="min",
    num_samples=1000,
    max_epochs=5,
    scheduler=asha(grace_period=1, reduction_factor=4),
    split=(0.8, 0.1, 0.1),
)

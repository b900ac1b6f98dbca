"""The search of ../shared/reference/optuna_digits.py as a space file (bench/hand_written.py times both).

Digits, 1-3 hidden layers of 16..256 units (log), lr 1e-4..1e-1 (log), dropout 0..0.4, weight decay 1e-6..1e-2
(log), batch 64, Adam, one thread; TPE and successive halving (first rung at epoch 2, a quarter kept, as Optuna's
``SuccessiveHalvingPruner(min_resource=2)``) on the validation accuracy; the script's 80 % of rows to train on.
Its size comes from the command line: ``--num-samples 24 --max-epochs 20`` (medium), ``64 50`` (large).
"""

from hpsearch import Search, asha, layers, loguniform, uniform

search = Search(
    data="sklearn:digits",
    params={
        "layers": layers(1, 3, units=(16, 256)),
        "lr": loguniform(1e-4, 1e-1),
        "dropout": uniform(0.0, 0.4),
        "weight_decay": loguniform(1e-6, 1e-2),
        "batch_size": 64,
        "optimizer": "adam",
    },
    metric="val_accuracy",
    mode="max",
    num_samples=24,
    max_epochs=20,
    scheduler=asha(grace_period=2, reduction_factor=4),
    split=(0.8, 0.1, 0.1),
)

"""The reference search of ray_tune_recipe.py / optuna_inprocess.py, as a space file.

Binary classification of make_classification(1000 x 10), two hidden layers of 4..256 units, and the learning
rate of SGD with momentum; 16 trials of 3 epochs. `bench/` times it against the two reference scripts.

    python -m hpsearch run search_spaces/reference.py
"""

from sklearn.datasets import make_classification

from hpsearch import Search, layers, loguniform


def make_data():
    """The reference data: a function in the space file returning (X, y)."""
    return make_classification(n_classes=2, n_features=10, n_samples=1000, random_state=0)


search = Search(
    data=make_data,
    params={
        "layers": layers(2, 2, units=(4, 256)),  # exactly two hidden layers, 4..256 units each (log scale)
        "lr": loguniform(1e-4, 1e-1),
        "optimizer": "sgd",
        "momentum": 0.9,
        "batch_size": 100,
    },
    metric="val_loss",
    mode="min",
    num_samples=16,
    max_epochs=3,
    scheduler="asha",
    executor="auto",  # a search this small runs fastest without Ray (here: batched); see docs/command-line.md
)

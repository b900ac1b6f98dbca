"""Breast cancer diagnosis (30 numeric features, 2 classes): a binary search, stopped early by patience.

    python -m hpsearch run search_spaces/breast_cancer.py
"""

from hpsearch import Search, choice, layers, loguniform, uniform

search = Search(
    data="sklearn:breast_cancer",  # 569 tumours, malignant or benign
    params={
        "layers": layers(1, 2, units=(8, 128)),  # 1 or 2 hidden layers
        "lr": loguniform(1e-4, 3e-2),
        "dropout": uniform(0.0, 0.3),
        "activation": choice(["relu", "tanh", "gelu"]),
        "batch_size": 32,  # a fixed value: not searched
    },
    metric="val_accuracy",  # mode is inferred: "max" for accuracy
    num_samples=12,
    max_epochs=40,
    early_stopping_patience=5,  # stop a trial after 5 epochs without a better val_accuracy
)

"""Your own network: a small CNN on scikit-learn's digits as 8x8 images, with hyperparameters of its own.

    python -m hpsearch run search_spaces/digits_cnn.py

``data`` returns images (N, 1, 8, 8), used as given; ``build`` makes the network of one trial from its values
(``channels``, ``kernel``, ``dropout`` here; ``lr`` and ``batch_size`` are the training function's own).
"""

import numpy as np
from torch import nn

from hpsearch import Search, choice, loguniform, uniform


def load():
    """The 1797 digits as images of one channel, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images[:, None, :, :] / 16.0).astype(np.float32), digits.target


def build(config, input_shape, n_outputs):
    """One convolution, then a linear layer: input_shape is (1, 8, 8), n_outputs 10."""
    channels, height, width = config["channels"], input_shape[1], input_shape[2]
    return nn.Sequential(
        nn.Conv2d(input_shape[0], channels, config["kernel"], padding="same"), nn.ReLU(),
        nn.Flatten(), nn.Dropout(config["dropout"]),
        nn.Linear(channels * height * width, n_outputs),
    )


search = Search(
    data=load, model=build,
    params={
        "channels": choice([4, 8, 16]),      # the function's own hyperparameters: any name
        "kernel": choice([3, 5]),
        "dropout": uniform(0.0, 0.3),
        "lr": loguniform(1e-3, 3e-2),       # the training function's, as for the built-in network
        "batch_size": 64,
    },
    metric="val_accuracy", num_samples=6, max_epochs=4,
)

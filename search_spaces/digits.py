"""Handwritten digits (8x8 images, 10 classes): a multiclass search over depth, width and the optimizer.

    python -m hpsearch run search_spaces/digits.py
"""

from hpsearch import Search, choice, layers, loguniform, uniform

search = Search(
    data="sklearn:digits",  # 1,797 images of 64 pixels, shipped with scikit-learn
    params={
        "layers": layers(1, 3, units=(16, 256)),  # 1 to 3 hidden layers, 16..256 units each (log scale)
        "lr": loguniform(1e-4, 1e-1),  # learning rate
        "dropout": uniform(0.0, 0.5),  # dropout after every hidden layer
        "weight_decay": loguniform(1e-6, 1e-2),  # L2 penalty, applied by the optimizer
        "batch_size": choice([32, 64, 128]),
        "optimizer": choice(["adam", "adamw", "sgd", "rmsprop"]),
    },
    metric="val_loss",  # what ASHA and TPE optimise
    mode="min",
    num_samples=20,  # trials
    max_epochs=30,  # most epochs a trial trains; ASHA stops weak trials sooner
)

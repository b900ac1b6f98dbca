"""Training: the one training function every trial runs (:func:`hpsearch.training.fit.fit`), the optimizers,
the architecture summary.

Imports neither Ray nor MLflow: a trial reports through a callback. May import :mod:`hpsearch.model`,
:mod:`hpsearch.data.dataset` and :mod:`hpsearch.space` (the defaults of the hyperparameters).
"""

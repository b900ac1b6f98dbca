"""The winner of a search: publishing it as an MLflow model, exporting its configuration, retraining it,
predicting with it.

May import :mod:`hpsearch.tracking` (to read searches), :mod:`hpsearch.model`, :mod:`hpsearch.training`,
:mod:`hpsearch.data` and :mod:`hpsearch.space`.
"""

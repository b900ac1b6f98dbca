"""Figures and the report, drawn from what MLflow holds (:mod:`hpsearch.tracking.reader`), never from a running
search's memory.

May import :mod:`hpsearch.tracking`, :mod:`hpsearch.model` and :mod:`hpsearch.training.architecture`.
"""

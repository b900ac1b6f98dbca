"""Data: the sources a space file names (scikit-learn, CSV, parquet, a function), the split and the preprocessing.

Returns a :class:`~hpsearch.data.dataset.Dataset` of numpy arrays. May import :mod:`hpsearch.space` (the search
it loads for) and :mod:`hpsearch.model` (the column plan a published model applies again).
"""

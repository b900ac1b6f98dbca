"""Tracking in MLflow: the schema (tags, metric keys, statuses, the trial record), the tracker that writes a
search's runs, the reader that reads them back (one way to find a search, one ranking), the stores and the UI.

May import :mod:`hpsearch.errors` and :mod:`hpsearch.model` (the files a model is made of); MLflow loads
inside the functions that need it.
"""

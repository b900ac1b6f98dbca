"""The space-file API: the distributions, :class:`Search` and its checks, and the loader of space files.

Owns what a user writes. Imports nothing of hpsearch but :mod:`hpsearch.errors` (Optuna, lazily, for the
distributions it records).
"""

"""Clusters: the checks before a search uses a Ray cluster, Ray Jobs, and the SLURM batch script.

May import :mod:`hpsearch.errors` only (Ray loads inside the functions that need it).
"""

"""What travels with a published model: the network spec and weights, the column plan, the pyfunc wrapper.

The whole package is copied into every MLflow model (``code_paths``), so that a model loads and serves where
hpsearch is not installed: its modules import each other relatively and nothing else of hpsearch.
"""

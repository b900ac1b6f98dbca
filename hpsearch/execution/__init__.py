"""Executing a search: the orchestrator (:func:`hpsearch.execution.search.run_search`), the executors behind it
(Ray Tune, in-process), the sampler and the pruner, the progress lines.

May import :mod:`hpsearch.space`, :mod:`hpsearch.data`, :mod:`hpsearch.training`, :mod:`hpsearch.tracking`,
:mod:`hpsearch.cluster` (checks), :mod:`hpsearch.results` (publishing the best model) and :mod:`hpsearch.figures`
(the figures at the end). Nothing imports it but :mod:`hpsearch.cli`.
"""

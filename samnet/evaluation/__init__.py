"""The comparison report: per-case results, statistics, ensembles, postprocessing, figures."""

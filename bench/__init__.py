"""Benchmarks (``make bench``): each ``bench/bench_*.py`` exposes ``BENCHMARKS``, a list of
functions returning :class:`bench.run.Result`; ``bench.run`` runs them, writes
``bench/results.json`` and refreshes the table in the README."""

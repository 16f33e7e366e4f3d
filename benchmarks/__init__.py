"""Benchmarks for h2o_sdk: ``python -m benchmarks`` (``--quick`` for a smoke run)."""

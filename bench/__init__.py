"""Switchboard's benchmarks: ``python -m bench.<module>`` from the repository root (README.md).

Shared parts: :mod:`bench.harness` (processes and stores), :mod:`bench.wrk` (running and reading
wrk), :mod:`bench.cpu` (where the CPU went), :mod:`bench.report` (RESULTS.md sections). One module
per benchmark beside them.
"""

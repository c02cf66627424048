"""The benchmark, run from the repository root: ``python -m benchmarks.bench --records 1000000``.

What it measures and the figures of each round: docs/performance.md."""

"""Scripts that measure; results go to BENCHMARKS.md."""

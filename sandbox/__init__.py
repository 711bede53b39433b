"""Local stand-ins for Azure used by tests, benchmarks and the local demo."""

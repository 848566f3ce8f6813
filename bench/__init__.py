"""Benchmarks of the stack against the original template's paths (``python -m bench --help``)."""

"""Benchmarks: scripts that print figures and write Markdown tables to docs/benchmarks.md."""

"""Observability: every Prometheus metric in one module, structured logs with request ids."""

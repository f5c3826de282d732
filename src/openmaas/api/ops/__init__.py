"""What operators and orchestrators ask of a running server: `/livez` and `/readyz` probes,
and Prometheus metrics at `/metrics`."""

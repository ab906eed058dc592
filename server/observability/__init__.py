"""What an operator sees: Prometheus metrics, JSON logs, the access record of each request."""

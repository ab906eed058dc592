"""The HTTP layer under the app: bounded connections (connection) and the per-request
context every route and log line relies on (request_context)."""

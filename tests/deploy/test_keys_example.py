"""deploy/keys.example is a key file the server reads, with Prometheus's key scoped to metrics."""

from nanoserve.server.security.keyfile import parse_key_file

from tests.deploy.podman import REPO


def test_keys_example_parses_and_scopes_prometheus_to_metrics():
    entries = {e.caller.id: e.caller for e in parse_key_file(REPO / "deploy" / "keys.example")}
    assert set(entries) == {"client", "prometheus"}
    assert entries["prometheus"].metrics and not entries["client"].metrics

"""deploy/nginx/nginx.conf: a complete config nginx accepts, agreeing with nanoserve's limits."""

import json
import re
import shutil
import subprocess

import pytest
from nanoserve.server.settings import Settings

from tests.deploy.podman import REPO

CONF = REPO / "deploy" / "nginx" / "nginx.conf"


def directive(name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", CONF.read_text(), re.MULTILINE)


def test_nginx_accepts_the_config(tmp_path):
    nginx = shutil.which("nginx")
    assert nginx, "nginx not installed: run scripts/setup.sh --with-test-tools"
    # nginx -t resolves the upstream's host name, which exists only inside the compose network:
    # give it one in a private mount namespace (this machine's /etc/hosts stays as it is).
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 nanoserve\n")
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind "$1" /etc/hosts && "$2" -t -c "$3"',
         "-", str(hosts), nginx, str(CONF)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_body_cap_and_keepalive_agree_with_the_server():
    defaults = Settings()
    assert directive("client_max_body_size") == [str(defaults.max_request_bytes)]
    # nginx must drop an idle upstream connection before nanoserve does, or it reuses a closed one
    [upstream_idle] = directive("keepalive_timeout")
    assert int(upstream_idle.removesuffix("s")) < defaults.keep_alive_timeout


def test_retries_only_unreached_503_or_404_upstreams():
    [retry] = directive("proxy_next_upstream")
    assert retry.split() == ["error", "timeout", "http_503", "http_404", "non_idempotent"]


def test_request_id_is_kept_and_made_only_when_absent():
    text = CONF.read_text()
    assert re.search(r'map \$http_x_request_id \$req_id \{\s*default\s+\$http_x_request_id;'
                     r'\s*""\s+\$request_id;', text)  # fmt: skip
    assert directive("proxy_set_header X-Request-Id") == ["$req_id"]


def test_the_client_address_replaces_any_forwarded_header_and_is_rate_limited():
    # appending ($proxy_add_x_forwarded_for) would pass on an address the client wrote
    assert directive("proxy_set_header X-Forwarded-For") == ["$remote_addr"]
    [zone] = directive("limit_req_zone")
    assert zone.split()[0] == "$binary_remote_addr"
    assert directive("limit_req") == ["zone=clients burst=500 nodelay"]
    assert directive("limit_req_status") == ["429"]


@pytest.mark.parametrize("status", [413, 429, 502, 504])
def test_nginx_errors_are_in_the_openai_shape(status):
    [body] = re.findall(rf"return {status} '([^']+)'", CONF.read_text())
    error = json.loads(body.replace("\\n", "\n"))["error"]  # nginx reads \n as a newline
    assert set(error) == {"message", "type", "param", "code"}
    assert re.search(rf"error_page {status} @\w+;", CONF.read_text())

"""nginx running the project's own deploy/nginx/nginx.conf on loopback, in front of servers
started here: what the reliability scenarios and the security tests put between their clients
and the replicas, so that what they test is the shipped proxy configuration."""

import re
import subprocess
from pathlib import Path

import httpx

from harness.processes import ROOT, free_port, wait_port

NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"


class Nginx:
    """deploy/nginx/nginx.conf with only its listen port, upstream servers and pid file changed
    (and private temp directories), so what is tested is the shipped configuration."""

    def __init__(self, workdir: Path, upstream_ports: list[int]):
        self.port, self.workdir = free_port(), workdir
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(self.templated(NGINX_CONF.read_text(), upstream_ports))
        self.proc: subprocess.Popen | None = None

    def templated(self, conf: str, upstream_ports: list[int]) -> str:
        temp = ""  # nginx's workers (user nobody) write request bodies there; keep them private
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            path = self.workdir / f"{kind}_temp"
            path.mkdir(mode=0o777, exist_ok=True)
            path.chmod(0o777)
            temp += f"    {kind}_temp_path {path};\n"
        # each replica keeps the shipped server line's parameters (max_fails=0)
        servers = "".join(f"server 127.0.0.1:{p}\\1;\n        " for p in upstream_ports)
        replaced = [
            (r"(?m)^pid .*;", f"pid {self.workdir / 'nginx.pid'};"),
            (r"server nanoserve:8000((?: [^;]*)?);\n\s*", servers),
            (r"listen 8080;", f"listen 127.0.0.1:{self.port};"),
            (r"(?m)^http \{\n", "http {\n" + temp),
        ]
        for pattern, new in replaced:
            conf, n = re.subn(pattern, new, conf)
            assert n == 1, f"deploy/nginx/nginx.conf changed: {pattern!r} matched {n} times"
        return conf

    def start(self) -> None:
        log = (self.workdir / "nginx.log").open("wb")
        cmd = ["/usr/sbin/nginx", "-p", str(self.workdir), "-e", str(self.workdir / "error.log")]
        cmd += ["-c", str(self.conf), "-g", "daemon off;"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 20)
        # something listening is not yet nginx listening: make sure it is nginx that answers
        # (what took the port may accept and never answer HTTP: a timeout says the same)
        try:
            server = httpx.get(self.url + "/health", timeout=10).headers.get("server")
        except httpx.HTTPError:
            server = None
        if server != "nginx" or self.proc.poll() is not None:
            error = (self.workdir / "error.log").read_text()[-400:]
            raise RuntimeError(f"nginx is not what answers on port {self.port}: {error}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the master ends its own workers
            self.proc.wait(20)

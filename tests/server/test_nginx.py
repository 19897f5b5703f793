#!/usr/bin/env python3
"""test_nginx.py — the API test suite and a SIGTERM drain through nginx, using the
shipped systemd/nginx-sdxld.conf (only its ports and temp paths rewritten).  nginx runs
unprivileged on loopback as a child of this test.  TAP output; without nginx the
whole test is one SKIP (install the Debian package nginx-light or nginx).
"""
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checks  # noqa: E402
from harness import Client, Daemon, Nginx, find_nginx, free_port, run_main  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def nginx_site(upstream_port, listen_port):
    with open(os.path.join(REPO, "systemd", "nginx-sdxld.conf")) as f:
        site = f.read()
    site, n1 = re.subn(r"server 127\.0\.0\.1:8080", f"server 127.0.0.1:{upstream_port}", site)
    site, n2 = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", site)
    site = re.sub(r"\n\s*listen \[::\]:80;", "", site)
    assert n1 == 1 and n2 == 1, "systemd/nginx-sdxld.conf: upstream or listen line not found"
    return site


def main(t):
    nginx = find_nginx()
    if not nginx:
        t.skip("API suite through nginx", "nginx is not installed (apt install nginx-light)")
        return
    tmp = tempfile.mkdtemp(prefix="sdxld-nginx-")
    with Daemon("--max_batch", "4", "--batch_window_ms", "60", "--queue_max", "64",
                "--shutdown_timeout_s", "1", tmp=tmp) as d:
        port = free_port()
        ng = Nginx(nginx, tmp, nginx_site(d.port, port))
        if not t.ok(ng.error is None, "nginx accepts systemd/nginx-sdxld.conf", ng.error):
            return
        try:
            ng.start(port)
            c = Client("127.0.0.1", port)
            t.diag(f"nginx {port} -> sdxld {d.port}")
            checks.run_api_suite(t, c)
            r = c.get("/v1/jobs/gen_00000000000000000000/events")
            t.eq(r.status, 404, "through nginx: the events location still proxies errors")
            checks.check_sigterm(t, d, c, d.log_text)
            r = c.get("/healthz")
            t.ok(r.status == 503 and r.error().get("code") == "unavailable",
                 "sdxld down: nginx answers 503 in the API's JSON error format", r)
        finally:
            ng.stop()
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        t.diag(f"daemon and nginx logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

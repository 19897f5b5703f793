#!/usr/bin/env python3
"""test_edge.py — the daemon's HTTP edge (server/edge.c, edge_head.c) against hostile
clients, over raw sockets on loopback.  TAP output; regression tests for the findings
of the hardening issue:

  - framing: duplicate and conflicting Content-Length, Content-Length with
    Transfer-Encoding, an unknown transfer coding (501), NUL in the request line (raw or
    percent-encoded: /healthz%00zz), NUL in a header value (the bearer-token bypass),
    control bytes in a header, HTTP/1.1
    without Host (400; HTTP/1.0 without it is fine), obs-fold, bare LF, HTTP/2.0 (505);
    each answered with a JSON error and the connection closed; a second request on the
    same connection is never served;
  - deadlines: a head sent slower than http_head_timeout_s and a body slower than
    http_body_timeout_s get their connection closed;
  - slow headers: 80 slow-header connections from 127.0.0.2 with max_connections 64 and
    a low per-address limit, while 20 normal requests from 127.0.0.1 all get 200;
  - tokens: a 514-character token is refused at load, a 512-character one works;
  - logs: repeated 503s are logged once per interval, with a count of the rest.

Outcomes only, never wall-clock bounds: client timeouts are generous.
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, MODEL, SCALE, Daemon, run_main  # noqa: E402

TOKEN = "edge-token-0123456789abcdef"


def connect(port, src="127.0.0.1", timeout=30):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(timeout * SCALE)
    s.connect(("127.0.0.1", port))
    return s


def read_all(s):
    """Everything the server sends until it closes; (bytes, closed)."""
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return out, True
            out += b
    except ConnectionResetError:
        return out, True
    except socket.timeout:
        return out, False


def exchange(port, data):
    """Send raw bytes, return (status, headers, body bytes, closed)."""
    s = connect(port)
    try:
        s.sendall(data)
        raw, closed = read_all(s)
    finally:
        s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0]) if lines else None
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return (int(m.group(1)) if m else None), hdrs, body, closed


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def check_framing(t, port):
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    cases = [
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
         b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400, "a duplicate Content-Length is 400"),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
         b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}", 400, "conflicting Content-Length headers are 400"),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
         b"Content-Length: 2, 2\r\n\r\n{}", 400, "a Content-Length list is 400"),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
         b"Content-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 400,
         "Content-Length with Transfer-Encoding is 400"),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
         b"Transfer-Encoding: gzip\r\n\r\n", 501, "Transfer-Encoding: gzip is 501 (and answered at once)"),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
         b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501, "a coding before chunked is 501"),
        (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
         b"Transfer-Encoding: chunked, chunked\r\n\r\n", 400, "chunked twice is 400"),
        (b"GET /healthz\0abc HTTP/1.1\r\nHost: x\r\n\r\n", 400, "a NUL in the request line is 400"),
        (b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
         b"\0junk\r\n\r\n", 400, "a NUL in the Authorization value is 400 (no token bypass)"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Test: a\x01b\r\n\r\n", 400, "a control byte (0x01) in a header is 400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Test: a\x7fb\r\n\r\n", 400, "DEL in a header is 400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Te\0st: ab\r\n\r\n", 400, "a NUL in a header name is 400"),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "HTTP/1.1 without Host is 400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, "two Host headers are 400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Test: a\r\n b\r\n\r\n", 400, "obs-fold is 400"),
        (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400, "a space before the colon is 400"),
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "bare LF line ends are 400"),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0 in an HTTP/1 request line is 505"),
        (b"GET /heal\xffthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "a non-ASCII byte in the target is 400"),
        (b"GET /healthz%00zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "an encoded NUL (%00) in the path is 400, "
         "not /healthz"),
        (b"GET /healthz%0d%0aX: y HTTP/1.1\r\nHost: x\r\n\r\n", 400, "an encoded CR LF in the path is 400"),
        (b"GET /healthz%7F HTTP/1.1\r\nHost: x\r\n\r\n", 400, "an encoded DEL in the path is 400"),
        (b"GET /v1/jobs?status=queued%00x HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n", 400,
         "an encoded NUL in the query is 400"),
        (b"GET /v1/jobs/gen_0/images/%30 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n", 400,
         "'0' percent-encoded (%30) in the path is 400: one spelling per path"),
    ]
    for data, want, desc in cases:
        st, hdrs, body, closed = exchange(port, data)
        t.ok(st == want and error_code(body) and closed and hdrs.get("connection") == "close"
             and hdrs.get("content-type") == "application/json",
             desc + " (JSON error, connection closed)", (st, hdrs, body[:200], closed))
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    st, _, body, closed = exchange(port, big)
    t.ok(st == 431 and closed, "a request head over 16 KiB is 431", (st, body[:200]))
    st, hdrs, body, closed = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    t.ok(st == 200 and closed, "HTTP/1.0 without Host is accepted", (st, body[:200]))
    st, hdrs, body, closed = exchange(port, b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                      TOKEN.encode() + b"\r\nX-Obs: caf\xe9\r\n\r\n")
    t.ok(st == 200 and hdrs.get("connection") == "close",
         "a clean request with the token (and obs-text in a value) is 200, Connection: close", (st, hdrs))
    st, _, body, _ = exchange(port, b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq(st, 401, "without the token it is 401 (auth is on in this daemon)")
    # Keep-alive must not let a second request skip the check.
    st, hdrs, body, closed = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                      b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                      TOKEN.encode() + b"\0junk\r\n\r\n")
    t.ok(st == 200 and closed and body.count(b"HTTP/1.") == 0,
         "two pipelined requests: only the first is answered, then the connection closes", (st, body[:300]))


def check_head_deadline(t, port):
    """http_head_timeout_s is 2 here: a head dribbled a byte every 0.25 s is cut off."""
    s = connect(port)
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"z" * 400 + b"\r\n\r\n"
    closed, got = False, b""
    try:
        for i in range(len(data)):   # 100 s at this pace: far beyond the deadline
            s.sendall(data[i:i + 1])
            time.sleep(0.25)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        got, closed = read_all(s)
    else:
        try:
            got, _ = read_all(s)
        except OSError:
            pass
    s.close()
    t.ok(closed, "a head slower than http_head_timeout_s gets its connection closed", got[:200])
    t.ok(not got or got.startswith(b"HTTP/1.1 408"), "... with a 408 when the client still reads it", got[:200])


def check_body_deadline(t, port):
    """http_body_timeout_s is 2 here: a body dribbled a byte every 0.25 s is cut off."""
    s = connect(port)
    body = json.dumps({"prompt": "p" * 300, "width": 64, "height": 64}).encode()
    s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" +
              f"Content-Length: {len(body)}\r\n\r\n".encode())
    closed = False
    try:
        for i in range(len(body)):   # 80 s at this pace
            s.sendall(body[i:i + 1])
            time.sleep(0.25)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    got = b""
    if not closed:
        got, closed = read_all(s)
    s.close()
    t.ok(closed and not got.startswith(b"HTTP/1.1 200"),
         "a body slower than http_body_timeout_s gets its connection closed", got[:200])


def slow_client(port, stop, stats):
    """One attacker connection from 127.0.0.2: a head a byte a second, reconnecting
    whenever the daemon closes it."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 200
    while not stop.is_set():
        try:
            s = connect(port, src="127.0.0.2", timeout=5)
        except OSError:
            stats["connect_failed"] += 1
            stop.wait(0.2)
            continue
        try:
            s.settimeout(0.5)   # a refusal comes at once, before the first byte
            try:
                b = s.recv(4096)
                if b.startswith(b"HTTP/1.1 429"):
                    stats["refused_429"] += 1
                stop.wait(0.5)
                continue        # answered or closed: reconnect
            except socket.timeout:
                pass
            stats["held"] += 1
            for i in range(len(head)):
                if stop.is_set():
                    break
                s.sendall(head[i:i + 1])
                if stop.wait(1.0):
                    break
        except OSError:
            stats["closed"] += 1
        finally:
            s.close()


def check_slowloris(t):
    with Daemon("--max_connections", "64", "--max_connections_per_address", "8",
                "--http_head_timeout_s", "10") as d:
        stop = threading.Event()
        stats = {"connect_failed": 0, "refused_429": 0, "closed": 0, "held": 0}
        ths = [threading.Thread(target=slow_client, args=(d.port, stop, stats)) for _ in range(80)]
        for th in ths:
            th.start()
        time.sleep(2)   # let the attack take its slots (not a verdict: the probes are)
        codes = []
        for i in range(20):
            try:
                st, _, body, _ = exchange(d.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                codes.append(st)
            except OSError as e:
                codes.append(repr(e))
        stop.set()
        for th in ths:
            th.join(30)
        t.ok(codes == [200] * 20, "80 slow-header connections from 127.0.0.2: all 20 probes from "
             "127.0.0.1 get 200", codes)
        t.diag(f"attacker: {stats}")
        t.ok(stats["refused_429"] > 0, "the attacker's connections beyond the per-address limit get 429",
             stats)
        t.eq(d.stop(), 0, "the daemon under attack exits 0 on SIGTERM")


def check_tokens(t, tmp):
    api = os.path.join(tmp, "long.tokens")
    with open(api, "w") as f:
        f.write("t" * 514 + "\n")
    os.chmod(api, 0o600)
    p = subprocess.run([BIN, "serve", "--model", MODEL, "--listen", "127.0.0.1:0", "--api_token_file", api],
                       capture_output=True, text=True, timeout=60)
    t.ok(p.returncode == 78 and "long.tokens:1" in p.stderr and "longer than 512" in p.stderr,
         "a 514-character token is refused at load, naming file:line", (p.returncode, p.stderr[-300:]))
    tok = "u" * 512
    with open(api, "w") as f:
        f.write(tok + "\n")
    with Daemon("--api_token_file", api, tmp=tmp) as d:
        r = d.client.request("GET", "/v1/jobs", token=tok)
        t.eq(r.status, 200, "a 512-character token (the longest accepted) authenticates")
        r = d.client.request("GET", "/v1/jobs", token=tok[:-1] + "v")
        t.eq(r.status, 401, "... and a different 512-character one does not")


def suppressed_total(log, pattern):
    """Lines matching pattern that were logged, and those counted as suppressed."""
    logged = suppressed = 0
    for ln in log.splitlines():
        m = re.search(r"^sdxld\[\d+\] W .* (\d+) similar lines suppressed in the last \d+ s: (.*)$", ln)
        if m and re.search(pattern, m.group(2)):
            suppressed += int(m.group(1))
            continue
        if re.search(pattern, ln):
            logged += 1
            m = re.search(r"\(\+(\d+) similar lines suppressed\)$", ln)
            if m:
                suppressed += int(m.group(1))
    return logged, suppressed


def check_repeated_503(t, tmp):
    """Warm-up at 768x768 keeps the daemon not ready for a few seconds: every generation
    request is a 503 not_ready, which used to write a WARN and an access line each."""
    d = Daemon("--backend", "cpu", "--default_width", "768", "--default_height", "768",
               "--log_repeat_interval_s", "1",
               wait_ready=False, tmp=tmp)
    try:
        n503 = 0
        other = None
        for i in range(1000):
            r = d.client.post("/v1/generate", {"prompt": "too early", "width": 64, "height": 64})
            if r.status != 503:
                other = r.status
                break
            n503 += 1
        t.diag(f"{n503} requests answered 503 before the daemon was ready (then {other})")
        d.wait_ready()
    finally:
        rc = d.stop()
    log = d.log_text()
    warn_logged, warn_supp = suppressed_total(log, r"POST /v1/generate:? 503 not_ready")
    acc_logged, acc_supp = suppressed_total(log, r"POST /v1/generate 503 (\d|\(access log\))")
    t.ok(n503 >= 20, "the warming daemon answered many 503s", n503)
    t.ok(warn_logged + warn_supp == n503 and warn_logged < n503 / 4,
         "repeated 503 warnings: a few logged, the rest counted as suppressed",
         (n503, warn_logged, warn_supp))
    t.ok(acc_logged + acc_supp == n503 and acc_logged < n503 / 4,
         "repeated 503 access lines: a few logged, the rest counted as suppressed",
         (n503, acc_logged, acc_supp))
    t.eq(rc, 0, "the daemon exits 0")


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-edge-")
    api = os.path.join(tmp, "api.tokens")
    with open(api, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(api, 0o600)
    with Daemon("--api_token_file", api, "--http_head_timeout_s", "2", "--http_body_timeout_s", "2",
                tmp=tmp) as d:
        check_framing(t, d.port)
        check_head_deadline(t, d.port)
        check_body_deadline(t, d.port)
        t.ok(d.client.get("/healthz").status == 200, "the daemon is alive after the hostile requests")
        log = d.log_text()
        t.ok("HTTP edge: 400 bad_request from 127.0.0.1" in log, "the edge's refusals are logged")
        t.eq(d.stop(), 0, "the daemon exits 0 on SIGTERM")
    check_slowloris(t)
    check_tokens(t, tmp)
    check_repeated_503(t, tmp)


if __name__ == "__main__":
    run_main(main)

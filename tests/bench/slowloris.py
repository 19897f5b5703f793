#!/usr/bin/env python3
"""slowloris.py — probe latency under a slow-headers attack (not a test).

Starts `sdxld serve` with the tiny model and max_connections 64, measures the latency
of normal requests from 127.0.0.1 (GET /healthz and a 64x64 generation, alternating)
first without an attack, then while N attacker connections from 127.0.0.2 send their
request heads one byte per second and reconnect whenever the daemon closes them.
Reports p50/p99/max latency and the failures (timeouts, resets) of each phase, and how
the attacker fared (connections held, refused with 429, cut off at the head deadline).

Usage (from the repository root, after building):
  python3 tests/bench/slowloris.py                          # 80 attackers, 200 probes
  python3 tests/bench/slowloris.py --per-address 0          # no per-address limit
  python3 tests/bench/slowloris.py --old                    # a binary without the edge options
Results: docs/reliability.md, section "HTTP edge".  Python standard library only.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from harness import Daemon  # noqa: E402

GEN = json.dumps({"prompt": "probe", "seed": 1, "width": 64, "height": 64,
                  "response_format": "png"}).encode()


def probe(port, i, timeout):
    """One request on its own connection; (seconds, status or error text)."""
    if i % 2:
        req = (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(GEN)) + GEN
    else:
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    t0 = time.perf_counter()
    try:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        data = b""
        while True:   # to Content-Length: an older daemon keeps the connection open
            b = s.recv(65536)
            if not b:
                break
            data += b
            head, sep, body = data.partition(b"\r\n\r\n")
            cl = [ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
            if sep and cl and len(body) >= int(cl[0]):
                break
        s.close()
        st = data[9:12].decode() if data.startswith(b"HTTP/1.") else "no answer"
    except OSError as e:
        st = type(e).__name__
    return time.perf_counter() - t0, st


def attacker(port, stop, stats, lock):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 4000
    while not stop.is_set():
        try:
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
        except OSError:
            stop.wait(0.2)
            continue
        kind = "cut_off"
        try:
            s.settimeout(0.5)
            try:
                b = s.recv(4096)
                kind = "refused_429" if b.startswith(b"HTTP/1.1 429") else "closed_at_once"
                stop.wait(0.5)
            except socket.timeout:
                with lock:
                    stats["held"] += 1
                for i in range(len(head)):
                    s.sendall(head[i:i + 1])
                    if stop.wait(1.0):
                        kind = None
                        break
        except OSError:
            pass
        finally:
            s.close()
        if kind:
            with lock:
                stats[kind] = stats.get(kind, 0) + 1


def pct(lat, p):
    return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")


def phase(port, n, timeout):
    """n probes, alternating GET /healthz and a 64x64 generation; stats per kind."""
    out = {}
    for i in range(n):
        dt, st = probe(port, i, timeout)
        r = out.setdefault("generate" if i % 2 else "healthz", {"lat": [], "failed": {}})
        if st == "200":
            r["lat"].append(dt)
        else:
            r["failed"][st] = r["failed"].get(st, 0) + 1
    for r in out.values():
        r["lat"].sort()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attackers", type=int, default=80)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--max-connections", dest="max_conn", type=int, default=64)
    ap.add_argument("--per-address", dest="per_addr", type=int, default=8)
    ap.add_argument("--head-timeout", dest="head_timeout", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=30, help="probe client timeout, s")
    ap.add_argument("--old", action="store_true", help="do not pass the edge options (older binary)")
    a = ap.parse_args()
    args = ["--max_connections", str(a.max_conn), "--threads", "1", "--log_level", "warn"]
    if not a.old:
        args += ["--max_connections_per_address", str(a.per_addr),
                 "--http_head_timeout_s", str(a.head_timeout)]
    with Daemon(*args) as d:
        base = phase(d.port, a.probes, a.timeout)
        stop, lock = threading.Event(), threading.Lock()
        stats = {"held": 0}
        ths = [threading.Thread(target=attacker, args=(d.port, stop, stats, lock), daemon=True)
               for _ in range(a.attackers)]
        for th in ths:
            th.start()
        time.sleep(3)   # let the attack take its slots
        t0 = time.time()
        under = phase(d.port, a.probes, a.timeout)
        dur = time.time() - t0
        stop.set()
        for th in ths:
            th.join(10)
    print(f"sdxld: max_connections {a.max_conn}, "
          + ("(no edge options)" if a.old else f"max_connections_per_address {a.per_addr}, "
             f"http_head_timeout_s {a.head_timeout}")
          + f"; {a.attackers} attackers from 127.0.0.2 (a head byte per second)")
    for name, ph in (("no attack", base), ("under attack", under)):
        for kind, r in sorted(ph.items()):
            lat = r["lat"]
            print(f"  {name:13s} {kind:9s} ok {len(lat)}/{len(lat) + sum(r['failed'].values())}  "
                  f"p50 {pct(lat, .5):.1f} ms  p99 {pct(lat, .99):.1f} ms  "
                  f"max {lat[-1] * 1e3 if lat else float('nan'):.1f} ms  failed {r['failed'] or 'none'}")
    print(f"  attack phase {dur:.1f} s; attacker connections: {stats}")


if __name__ == "__main__":
    main()

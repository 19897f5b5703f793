#!/usr/bin/env python3
"""load.py — load benchmark for `sdxld serve` (not a test).

N concurrent clients send synchronous generation requests for a fixed time; the report
gives throughput, latency percentiles, the mean batch size (from /metrics), and checks
that every response was correct and none was lost:

  - every request got an HTTP answer (no connection error, no timeout);
  - 200 answers are PNGs of the requested size whose X-Seed and `parameters` chunk match
    the request;
  - requests are drawn from a fixed pool of (prompt, seed) pairs whose images were
    generated alone before the run, and each loaded answer is compared with that
    reference pixel by pixel: batching must not change pixels.

Usage (from the repository root, after building):
  python3 tests/bench/load.py --clients 8 --duration 30
  python3 tests/bench/load.py --url http://127.0.0.1:8080 --clients 16   # a running daemon
Python standard library only.
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from harness import Client, Daemon, png_text  # noqa: E402


def png_pixels(data):
    """Decode an 8-bit RGB, non-interlaced PNG (what sdxld writes) → (w, h, bytes)."""
    i, idat, w, h = 8, b"", 0, 0
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        typ, chunk = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        if typ == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and ctype == 2, "not 8-bit RGB"
        elif typ == b"IDAT":
            idat += chunk
        i += 12 + n
    raw, stride = zlib.decompress(idat), w * 3
    out, prev, o = bytearray(), bytearray(stride), 0
    for _ in range(h):
        f, line = raw[o], bytearray(raw[o + 1:o + 1 + stride])
        o += 1 + stride
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return w, h, bytes(out)


def metrics_snapshot(c):
    text = c.get("/metrics").body.decode()

    def val(name):
        m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0
    return {k: val(k) for k in ("sdxld_batch_size_sum", "sdxld_batch_size_count",
                                "sdxld_images_generated_total", "sdxld_queue_wait_seconds_sum",
                                "sdxld_queue_wait_seconds_count", "sdxld_generation_seconds_sum")}


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    f = int(k)
    return xs[f] + (xs[min(f + 1, len(xs) - 1)] - xs[f]) * (k - f)


def run(args):
    daemon = None
    if args.url:
        m = re.match(r"http://([^:/]+):(\d+)", args.url)
        c = Client(m.group(1), int(m.group(2)), token=args.token)
    else:
        daemon = Daemon("--max_batch", str(args.max_batch), "--batch_window_ms", str(args.batch_window_ms),
                        "--queue_max", str(max(64, args.clients * 2)), "--threads", str(args.threads),
                        "--max_n", "8", "--log_level", "warn")
        c = daemon.client
    try:
        rng = random.Random(1)
        pool = [(f"load test prompt {i}: a lighthouse at dusk, detail {rng.randrange(1000)}", 10_000 + i)
                for i in range(args.pool)]
        ref = {}
        for prompt, seed in pool:
            r = c.generate(prompt=prompt, seed=seed, width=args.size, height=args.size,
                           response_format="png")
            assert r.status == 200, r
            ref[(prompt, seed)] = png_pixels(r.body)[2]

        before = metrics_snapshot(c)
        lock = threading.Lock()
        lat, codes, bad, lost, exact, within1 = [], {}, [], [], [0], [0]
        stop_at = time.time() + args.duration
        t_start = time.time()

        def client(k):
            crng = random.Random(100 + k)
            while time.time() < stop_at:
                prompt, seed = crng.choice(pool)
                t0 = time.time()
                try:
                    r = c.generate(prompt=prompt, seed=seed, width=args.size, height=args.size,
                                   response_format="png")
                except Exception as e:  # noqa: BLE001 — a lost request
                    with lock:
                        lost.append(repr(e))
                    continue
                dt = time.time() - t0
                problem = None
                if r.status == 200:
                    try:
                        w, h, px = png_pixels(r.body)
                        params = png_text(r.body, "parameters") or ""
                        if (w, h) != (args.size, args.size):
                            problem = f"size {w}x{h}"
                        elif r.headers.get("x-seed") != str(seed) or f"Seed: {seed}," not in params \
                                or not params.startswith(prompt + "\n"):
                            problem = "seed/prompt mismatch"
                        else:
                            d = max(abs(a - b) for a, b in zip(px, ref[(prompt, seed)]))
                            with lock:
                                exact[0] += d == 0
                                within1[0] += d <= 1
                            if d > 1:
                                problem = f"pixels differ from the reference by up to {d}"
                    except Exception as e:  # noqa: BLE001
                        problem = f"undecodable PNG: {e}"
                with lock:
                    codes[r.status] = codes.get(r.status, 0) + 1
                    if r.status == 200:
                        lat.append(dt)
                    if problem:
                        bad.append(problem)

        probe = []

        def prober():
            # The HTTP threads must stay responsive while the worker is saturated.
            while time.time() < stop_at:
                t0 = time.time()
                try:
                    ok = c.get("/healthz", timeout=10).status == 200
                except OSError:
                    ok = False
                probe.append((time.time() - t0) if ok else float("inf"))
                time.sleep(0.1)

        ths = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        ths.append(threading.Thread(target=prober))
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        wall = time.time() - t_start
        after = metrics_snapshot(c)
    finally:
        if daemon:
            rc = daemon.stop()
            if rc == 0:
                shutil.rmtree(daemon.tmp, ignore_errors=True)
    d = {k: after[k] - before[k] for k in after}
    ok200 = codes.get(200, 0)
    res = {
        "clients": args.clients, "duration_s": round(wall, 1), "size": args.size,
        "max_batch": args.max_batch, "batch_window_ms": args.batch_window_ms, "threads": args.threads,
        "requests": sum(codes.values()) + len(lost), "codes": codes, "lost": len(lost),
        "incorrect": len(bad), "pixel_exact": exact[0], "pixel_within_1": within1[0],
        "images_per_s": round(ok200 / wall, 2),
        "latency_ms": {"p50": round(pct(lat, 50) * 1e3, 1), "p90": round(pct(lat, 90) * 1e3, 1),
                       "p99": round(pct(lat, 99) * 1e3, 1), "max": round(max(lat) * 1e3, 1) if lat else None},
        "mean_batch": round(d["sdxld_batch_size_sum"] / d["sdxld_batch_size_count"], 2)
        if d["sdxld_batch_size_count"] else None,
        "mean_queue_wait_ms": round(1e3 * d["sdxld_queue_wait_seconds_sum"] / d["sdxld_queue_wait_seconds_count"], 1)
        if d["sdxld_queue_wait_seconds_count"] else None,
        "engine_busy": round(d["sdxld_generation_seconds_sum"] / wall, 2),
        "healthz_ms": {"p50": round(pct(probe, 50) * 1e3, 1), "p99": round(pct(probe, 99) * 1e3, 1),
                       "failed": sum(1 for x in probe if x == float("inf"))},
    }
    if daemon:
        res["daemon_exit"] = rc
    if bad:
        res["first_problems"] = bad[:5]
    if lost:
        res["first_lost"] = lost[:5]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pool", type=int, default=16, help="distinct (prompt, seed) pairs")
    ap.add_argument("--max-batch", dest="max_batch", type=int, default=4)
    ap.add_argument("--batch-window-ms", dest="batch_window_ms", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="engine CPU threads (0 = all)")
    ap.add_argument("--url", help="benchmark a running daemon instead of starting one")
    ap.add_argument("--token")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args()
    res = run(args)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:20} {v}")
    ok = res["lost"] == 0 and res["incorrect"] == 0 and res.get("daemon_exit", 0) == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

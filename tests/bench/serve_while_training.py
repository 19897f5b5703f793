#!/usr/bin/env python3
"""serve_while_training.py — generation latency while a DMD2 run trains in the same
daemon (not a test: numbers, no verdict; docs/benchmarks.md keeps them).

A daemon on the built-in model (models/shapes-small) serves sequential generations: first
idle, then while `POST /v1/train` with the smallest body ({"out", "steps"}: every other
option from the model and the option table) runs.  Reported: p50/p99 latency of each phase,
their ratio, the training iterations made meanwhile, and how many training passes each
generation waited behind (`result.training_passes_waited`, counted by the daemon).

Usage (from the repository root, after building):
  python3 tests/bench/serve_while_training.py [--requests 40]
Python standard library only.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from harness import Daemon  # noqa: E402

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "shapes-small")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def phase(c, n, tag):
    lat, waited = [], []
    for i in range(n):
        t0 = time.monotonic()
        r = c.post("/v1/generate", {"prompt": "a red circle in the center", "seed": i, "async": True})
        j = c.wait_job(r.json()["id"], timeout=600)
        lat.append((time.monotonic() - t0) * 1e3)
        waited.append((j.get("result") or {}).get("training_passes_waited"))
    print(f"{tag:>9}: p50 {pct(lat, 0.5):7.1f} ms  p99 {pct(lat, 0.99):7.1f} ms  "
          f"passes waited: max {max(w or 0 for w in waited)}")
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sdxld-bench-")
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    try:
        with Daemon("--data_root", root, "--log_level", "warn", model=MODEL, tmp=tmp) as d:
            c = d.client
            phase(c, 5, "warm-up")
            idle = phase(c, a.requests, "idle")
            r = c.post("/v1/train", {"out": "run", "steps": 100000})
            if r.status != 202:
                sys.exit(f"POST /v1/train: {r.status} {r.body[:300]!r}")
            jid = r.json()["id"]
            print("training estimate:", r.json().get("estimate"))
            while c.get(f"/v1/train/{jid}").json().get("step", 0) < 1:
                time.sleep(0.2)
            s0 = c.get(f"/v1/train/{jid}").json()["step"]
            busy = phase(c, a.requests, "training")
            s1 = c.get(f"/v1/train/{jid}").json()["step"]
            c.delete(f"/v1/train/{jid}")
            print(f"ratio training/idle: p50 {pct(busy, 0.5) / pct(idle, 0.5):.2f}x  "
                  f"p99 {pct(busy, 0.99) / pct(idle, 0.99):.2f}x; {s1 - s0} training iterations meanwhile")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

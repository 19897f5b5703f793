#!/usr/bin/env python3
"""lora_switch.py — what switching LoRA adapters costs (a benchmark, not a test).

One daemon, synchronous requests one after another (no batching), the same prompt and seed
each time; per series the median and mean wall time of a request:

  none         no adapter
  same         per request (the "lora" field), always adapter A: after the first, cached
  switch       per request, alternating A and B: what a mix of clients asking for
               different adapters costs (the adapters stay loaded: sdxld_lora_loads_total
               is reported, and must not grow during the series)
  merged       A merged into the served UNet (POST /v1/models/load {"lora": A}), then
               plain requests: today's global LoRA
  merged-switch  alternating A and B the merged way: a models/load (UNet reload + merge)
               before every request, its time counted

Usage (from the repository root, after building):
  python3 tests/bench/lora_switch.py                        # tiny model, generated adapters
  python3 tests/bench/lora_switch.py --model DIR --models-dir LORAS --loras a,b --size 1024
Adapters are generated for the model's UNet (tests/server/lora_files.py) unless --loras
names two files in --models-dir.  Python standard library only.
"""
import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from harness import MODEL, Daemon  # noqa: E402
from lora_files import make_lora  # noqa: E402


def metric(c, name):
    m = re.search(rf"^{name} (\S+)$", c.get("/metrics").body.decode(), re.M)
    return float(m.group(1)) if m else float("nan")


def post_ok(c, path, body):
    r = c.post(path, body, timeout=3600)
    if r.status != 200:
        raise RuntimeError(f"{path}: {r.status} {r.body[:300]!r}")


def timed(c, body, before=None):
    """Wall time in ms of one request, and of `before` (a model load) when given."""
    t0 = time.perf_counter()
    if before:
        post_ok(c, *before)
    r = c.post("/v1/generate", body, timeout=3600)
    ms = (time.perf_counter() - t0) * 1e3
    if r.status != 200:
        raise RuntimeError(f"/v1/generate: {r.status} {r.body[:300]!r}")
    return ms


def series(c, name, n, body_of, load_of=None):
    times, loads0 = [], metric(c, "sdxld_lora_loads_total")
    for i in range(n):
        times.append(timed(c, body_of(i), load_of(i) if load_of else None))
    loads = metric(c, "sdxld_lora_loads_total") - loads0
    print(f"{name:14s} median {statistics.median(times):9.1f} ms   mean {statistics.mean(times):9.1f} ms   "
          f"({n} requests, {loads:.0f} adapter files read)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--models-dir", help="a folder holding the adapters named by --loras")
    ap.add_argument("--loras", default="a,b", help="two adapter names (default: generated a, b)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=8, help="requests per series")
    ap.add_argument("--scale", type=float, default=0.8)
    args = ap.parse_args()
    a, b = args.loras.split(",")
    models = args.models_dir
    if not models:
        models = tempfile.mkdtemp(prefix="sdxld-bench-lora-")
        print(f"# writing two adapters for {args.model} under {models}", flush=True)
        make_lora(os.path.join(models, a + ".safetensors"), 1, model=args.model)
        make_lora(os.path.join(models, b + ".safetensors"), 2, rank=4, model=args.model)
    models = os.path.realpath(models)
    files = {x: os.path.join(models, x + ".safetensors") for x in (a, b)}
    base = {"prompt": "a red circle", "seed": 1, "width": args.size, "height": args.size, "response_format": "png"}

    def with_lora(name):
        return dict(base, lora=[{"name": name, "scale": args.scale}])

    def load(name):
        return ("/v1/models/load", {"lora": os.path.relpath(files[name], models), "lora_scale": args.scale})

    with Daemon("--models_dir", models, "--data_root", models, "--batch_window_ms", "0",
                "--max_width", str(max(args.size, 64)), "--max_height", str(max(args.size, 64)),
                model=args.model) as d:
        c = d.client
        timed(c, base)   # warm: the first pass sizes the activation arena
        timed(c, with_lora(a))
        timed(c, with_lora(b))
        series(c, "none", args.n, lambda i: base)
        series(c, "same", args.n, lambda i: with_lora(a))
        series(c, "switch", args.n, lambda i: with_lora((a, b)[i % 2]))
        post_ok(c, *load(a))
        series(c, "merged", args.n, lambda i: base)
        series(c, "merged-switch", args.n, lambda i: base, lambda i: load((a, b)[i % 2]))
    if not args.models_dir:
        shutil.rmtree(models)


if __name__ == "__main__":
    main()

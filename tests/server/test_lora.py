#!/usr/bin/env python3
"""test_lora.py — LoRA adapters chosen per request (docs/api.md, "LoRA per request").
Python standard library only.  TAP output.

A models_dir with two adapter files for the tiny model's UNet, written here (kohya keys,
random values): a.safetensors at the top, b.safetensors under loras/, and a symbolic link
c.safetensors -> a.safetensors (refused: no link is followed in models_dir).

  1. the "lora" field on POST /v1/generate, the OpenAI generations route and A1111
     txt2img, and A1111's <lora:NAME:SCALE> prompt tags: the same adapter and seed give the
     same pixels on every route; the job's request and the PNG infotext name the adapters;
  2. a batch window that gathers requests with different adapter sets: they run in
     separate batches (sdxld_batches_total), each image equal to the same request alone;
  3. switching adapters between requests reads each file once (sdxld_lora_loads_total);
  4. errors: unknown names, bad scales, too many, a name twice, path-like names, malformed
     tags, a link, and a daemon without models_dir: 400 (422 on the A1111 route) naming
     the field; adapters beyond lora_cache_mb: 503.
"""
import base64
import json
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SCALE, Daemon, png_rgb, png_text, run_main  # noqa: E402
from lora_files import make_lora  # noqa: E402

def pixels(body):
    return png_rgb(body)[2] if body and png_rgb(body) else None


def b64_pixels(s):
    return pixels(base64.b64decode(s))


def gen_png(c, prompt="a red cube", seed=7, lora=None):
    body = {"prompt": prompt, "seed": seed, "width": 64, "height": 64, "response_format": "png"}
    if lora is not None:
        body["lora"] = lora
    r = c.post("/v1/generate", body)
    return r.body if r.status == 200 else None


def metric(c, name):
    m = re.search(rf"^{name} (\S+)$", c.get("/metrics").body.decode(), re.M)
    return float(m.group(1)) if m else None


def metric_when(c, name, pred, timeout=10):
    """The metric once pred holds (the engine's figures reach /metrics just after the answer
    that made them), or its last value."""
    end = time.time() + timeout * SCALE
    while True:
        v = metric(c, name)
        if (v is not None and pred(v)) or time.time() > end:
            return v
        time.sleep(0.05)


def check_routes(t, c):
    base, a8 = gen_png(c), gen_png(c, lora=[{"name": "a", "scale": 0.8}])
    t.ok(base and a8 and pixels(base) != pixels(a8), "/v1/generate with lora a × 0.8: 200, other pixels than without")
    t.ok(pixels(gen_png(c, lora=[{"name": "a", "scale": 0.8}])) == pixels(a8), "and the same pixels again")
    t.ok(pixels(gen_png(c, lora=[{"name": "a"}])) not in (pixels(a8), None), "scale 1 when absent: other pixels")
    t.ok(pixels(gen_png(c, lora=[{"name": "a", "scale": 0}])) == pixels(base), "scale 0: as without an adapter")
    ab = gen_png(c, lora=[{"name": "b", "scale": -0.5}, {"name": "a", "scale": 0.8}])
    t.ok(ab and pixels(gen_png(c, lora=[{"name": "a", "scale": 0.8}, {"name": "b", "scale": -0.5}])) == pixels(ab)
         and pixels(ab) != pixels(a8), "two adapters (b from loras/): the same in either order")
    text = png_text(ab, "parameters") or ""
    t.ok(text.startswith("a red cube <lora:a:0.8> <lora:b:-0.5>\n"), "the infotext has the adapters as A1111 tags",
         text[:120])

    r = c.post("/v1/generate", {"prompt": "a red cube", "seed": 7, "width": 64, "height": 64, "async": True,
                                "lora": [{"name": "a", "scale": 0.8}]})
    job = c.wait_job(r.json()["id"]) if r.status == 202 else {}
    t.eq(job.get("request", {}).get("lora"), [{"name": "a", "scale": 0.8}], "the job's request lists its adapters")

    r = c.post("/v1/images/generations", {"prompt": "a red cube", "size": "64x64",
                                          "lora": [{"name": "a", "scale": 0.8}]})
    d = r.json()["data"][0] if r.status == 200 else {}
    same = pixels(gen_png(c, seed=d.get("seed", 0), lora=[{"name": "a", "scale": 0.8}]))
    t.ok(r.status == 200 and b64_pixels(d["b64_json"]) == same, "OpenAI route, lora as an extra field: the "
         "pixels of /v1/generate with its seed", r)

    r = c.post("/sdapi/v1/txt2img", {"prompt": "a red cube<lora:a:0.8>", "seed": 7, "width": 64, "height": 64})
    body = r.json() if r.status == 200 else {}
    t.ok(r.status == 200 and b64_pixels(body["images"][0]) == pixels(a8),
         "A1111 txt2img with <lora:a:0.8> in the prompt = /v1/generate with lora a × 0.8", r)
    info = json.loads(body.get("info", "{}"))
    t.ok(info.get("prompt") == "a red cube" and "<lora:a:0.8>" in info.get("infotexts", [""])[0],
         "the tag left the prompt; the infotext carries it", info.get("infotexts"))
    r = c.post("/sdapi/v1/txt2img", {"prompt": "<lora:b:-0.5>a red cube", "seed": 7, "width": 64, "height": 64,
                                     "lora": [{"name": "a", "scale": 0.8}]})
    t.ok(r.status == 200 and b64_pixels(r.json()["images"][0]) == pixels(ab),
         "A1111: a tag and the lora field together = both adapters", r)
    r = c.post("/sdapi/v1/txt2img", {"prompt": "a red <lora:a>cube", "seed": 7, "width": 64, "height": 64})
    t.ok(r.status == 200 and json.loads(r.json()["info"])["prompt"] == "a red cube",
         "<lora:NAME> (scale 1) is taken out too", r)


def check_batching(t, c):
    """Three adapter sets inside one batch window: three batches, each image as alone."""
    sets = [[{"name": "a", "scale": 0.8}], [{"name": "b", "scale": 1.0}], None, [{"name": "a", "scale": 0.8}]]
    before = metric(c, "sdxld_batches_total")
    ids = []
    for i, lo in enumerate(sets):
        body = {"prompt": "a blue square", "seed": 100 + i, "width": 64, "height": 64, "async": True}
        if lo:
            body["lora"] = lo
        r = c.post("/v1/generate", body)
        ids.append(r.json()["id"] if r.status == 202 else None)
    jobs = [c.wait_job(i) if i else {} for i in ids]
    t.ok(all(j.get("status") == "succeeded" for j in jobs), "four requests, three adapter sets, one window")
    t.eq(metric(c, "sdxld_batches_total") - before, 3, "three batches: the two requests with lora a shared one, "
         "the others ran alone")
    alone = True
    for i, (lo, jid) in enumerate(zip(sets, ids)):
        got = c.get(f"/v1/jobs/{jid}/images/0").body
        want = gen_png(c, prompt="a blue square", seed=100 + i, lora=lo)
        alone &= pixels(got) is not None and pixels(got) == pixels(want)
    t.ok(alone, "each request's pixels = the same request alone")


def check_no_reload(t, c):
    loads = metric_when(c, "sdxld_lora_loads_total", lambda v: v == 2)
    for name in ("a", "b", "a", "b", "a"):
        gen_png(c, lora=[{"name": name, "scale": 0.5}])
    t.eq(metric(c, "sdxld_lora_loads_total"), loads, "switching a, b, a, b, a read no file again "
         f"(sdxld_lora_loads_total stays {loads})")
    t.ok(loads == 2 and metric_when(c, "sdxld_lora_cached", lambda v: v == 2) == 2, "two files read in all, both kept")
    mem = re.search(r'sdxld_device_memory_bytes\{kind="lora"\} (\d+)', c.get("/metrics").body.decode())
    t.ok(mem and int(mem.group(1)) > 0, "their memory is reported", mem and mem.group(0))


def check_errors(t, c):
    g = {"prompt": "x", "width": 64, "height": 64}
    bad = [
        ([{"name": "nope"}], "no LoRA named 'nope'"),
        ([{"name": "a", "scale": 11}], "outside"),
        ([{"name": "a", "scale": "x"}], "scale: expected a number"),
        ([{"name": "a"}, {"name": "a", "scale": 0.5}], "twice"),
        ([{"name": n} for n in "abcde"], "at most 4"),
        ([{"name": "../a"}], "plain name"),
        ([{"name": "loras/b"}], "plain name"),
        ([{"name": "c"}], "no LoRA named 'c'"),          # a link to a.safetensors
        ([{"name": "a", "weight": 1}], "unknown field 'weight'"),
        ([{"scale": 1}], "name: expected a string"),
        ({"name": "a"}, "expected a list"),
        (["a"], "expected an object"),
    ]
    for lora, words in bad:
        r = c.post("/v1/generate", dict(g, lora=lora))
        e = r.error()
        t.ok(r.status == 400 and e.get("field") == "lora" and words in e.get("message", ""),
             f"/v1/generate lora={json.dumps(lora)[:60]}: 400 naming lora ({words})", r)
    r = c.post("/v1/images/generations", {"prompt": "x", "size": "64x64", "lora": [{"name": "nope"}]})
    t.ok(r.status == 400 and r.json().get("error", {}).get("param") == "lora", "OpenAI route: 400, param lora", r)
    for prompt, words in (("x <lora:nope:1>", "no LoRA named 'nope'"), ("x <lora:a:x>", "not a number"),
                          ("x <lora:a:1:2>", "one number"), ("x <lora:a:1", "closing"),
                          ("x <lora:a:20>", "outside"), ("<lora:a><lora:a:0.5>", "twice"),
                          ("x <lora:../a:1>", "plain name")):
        r = c.post("/sdapi/v1/txt2img", {"prompt": prompt, "width": 64, "height": 64})
        d = r.json().get("detail", [{}]) if r.status == 422 else [{}]
        t.ok(r.status == 422 and d[0].get("loc") == ["body", "prompt"] and words in d[0].get("msg", ""),
             f"A1111 prompt {prompt!r}: 422 naming prompt ({words})", r)
    r = c.post("/sdapi/v1/txt2img", {"prompt": "x", "lora": [{"name": "nope"}]})
    t.ok(r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "lora"], "A1111 lora field: 422 naming lora", r)


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-test-lora-")
    try:
        models = os.path.join(tmp, "models")
        os.makedirs(os.path.join(models, "loras"))
        make_lora(os.path.join(models, "a.safetensors"), 1)
        make_lora(os.path.join(models, "loras", "b.safetensors"), 2, rank=3, bscale=0.08)
        os.symlink(os.path.join(models, "a.safetensors"), os.path.join(models, "c.safetensors"))
        with Daemon("--models_dir", models, "--max_batch", "4", "--batch_window_ms", "1500", "--warmup", "false",
                    tmp=tmp) as d:
            check_batching(t, d.client)
        with Daemon("--models_dir", models, "--batch_window_ms", "0", "--warmup", "false", tmp=tmp) as d:
            c = d.client
            check_routes(t, c)
            check_no_reload(t, c)
            check_errors(t, c)
        with Daemon("--models_dir", models, "--lora_cache_mb", "1", "--warmup", "false", tmp=tmp) as d:
            # a (rank 2) is 0.7 MiB in fp32, b (rank 3) 1 MiB: one at a time fits, both do not
            ok_a = gen_png(d.client, lora=[{"name": "a"}]) is not None
            r = d.client.post("/v1/generate", {"prompt": "x", "width": 64, "height": 64,
                                               "lora": [{"name": "a"}, {"name": "b"}]})
            t.ok(ok_a and r.status == 503 and "lora_cache_mb" in r.error().get("message", ""),
                 "adapters beyond lora_cache_mb: 503 saying so", r)
            t.ok(gen_png(d.client, lora=[{"name": "b"}]) is not None and
                 metric_when(d.client, "sdxld_lora_evictions_total", lambda v: v >= 1) >= 1,
                 "one at a time still serves (the least recently used evicted)")
        with Daemon("--warmup", "false", tmp=tmp) as d:
            r = d.client.post("/v1/generate", {"prompt": "x", "width": 64, "height": 64, "lora": [{"name": "a"}]})
            t.ok(r.status == 400 and "no models_dir" in r.error().get("message", ""),
                 "a daemon without models_dir: 400 naming lora", r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


run_main(main)

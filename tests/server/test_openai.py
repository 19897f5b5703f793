#!/usr/bin/env python3
"""test_openai.py — POST /v1/images/generations as OpenAI's clients use it, and CORS.
Python standard library only (the official client is tests/ref/openai_client.sh, run by
hand).  TAP output.

Daemons started here (the tiny model, native size 64x64; default size 32x32 so that
size "auto" is told apart from "no size"):
  1. cors_origins set, trust_proxy off: b64_json and url answers, png/jpeg/webp,
     output_compression, size auto, quality/style, OpenAI-shaped errors, CORS;
  2. no cors_origins, trust_proxy on: URLs from X-Forwarded-Proto/-Host, CORS off;
  3. public_url set: URLs under it whatever the request says;
plus the configuration checks of the new options.
"""
import base64
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, Daemon, jpeg_info, png_info, run_main, webp_info  # noqa: E402

GEN = "/v1/images/generations"
ORIGIN = "https://app.example.com"
SMALL = ("--default_width", "32", "--default_height", "32")


def gen(c, **fields):
    fields.setdefault("prompt", "a red cube")
    return c.post(GEN, fields)


def first_image(r):
    return base64.b64decode(r.json()["data"][0]["b64_json"])


def job_request(c, r):
    j = c.get(f"/v1/jobs/{r.headers.get('x-job-id')}?b64_json=false")
    return j.json().get("request", {}) if j.status == 200 else {}


def check_b64_and_url(t, c):
    r = gen(c, size="64x64")
    body = r.json() if r.status == 200 else {}
    t.ok(r.status == 200 and isinstance(body.get("created"), int) and body.get("output_format") == "png"
         and body.get("size") == "64x64" and png_info(first_image(r)) == (64, 64)
         and isinstance(body["data"][0].get("seed"), int),
         "no response_format: b64_json of a decodable 64x64 PNG, with created, output_format, size, seed", r)
    u = body.get("usage", {})
    t.ok(u.get("total_tokens") == 0 and u.get("input_tokens") == 0 and u.get("output_tokens") == 0
         and u.get("input_tokens_details") == {"text_tokens": 0, "image_tokens": 0},
         "usage is present with OpenAI's keys, all zero (sdxld meters no tokens)", u)
    r = gen(c, size="64x64", n=2, response_format="url")
    urls = [d.get("url", "") for d in r.json()["data"]] if r.status == 200 else []
    origin = f"http://127.0.0.1:{c.port}"
    t.ok(len(urls) == 2 and len(set(urls)) == 2 and all(u.startswith(origin + "/v1/jobs/") for u in urls)
         and all("b64_json" not in d for d in r.json()["data"]),
         "response_format url, n 2: two absolute URLs from the Host header, no b64_json", r)
    for i, u in enumerate(urls):
        img = c.get(u[len(origin):])
        t.ok(img.status == 200 and img.headers.get("content-type") == "image/png"
             and png_info(img.body) == (64, 64), f"URL {i} serves its 64x64 PNG", img)
    again = c.get(urls[0][len(origin):]) if urls else None
    t.ok(again is not None and again.status == 200, "a URL answers again: url images are kept after the answer")
    r = c.post(GEN, {"prompt": "x", "response_format": "url"},
               headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.com"})
    t.ok(r.status == 200 and r.json()["data"][0]["url"].startswith(origin + "/"),
         "trust_proxy off: X-Forwarded-Proto/-Host are ignored", r)


def check_formats(t, c):
    r = gen(c, size="64x64", output_format="jpeg")
    jpg = first_image(r) if r.status == 200 else b""
    info = jpeg_info(jpg) or {}
    seed = r.json()["data"][0]["seed"] if r.status == 200 else None
    t.ok(r.json().get("output_format") == "jpeg" and info.get("size") == (64, 64),
         "output_format jpeg: SOI, a 64x64 frame header, EOI", r)
    t.ok(info.get("comment", "").startswith("a red cube\n") and f"Seed: {seed}" in info.get("comment", ""),
         "the JPEG's COM marker carries the parameters text", info.get("comment"))
    r = gen(c, size="64x64", output_format="webp", output_compression=90)
    t.ok(r.status == 200 and webp_info(first_image(r)) == (64, 64),
         "output_format webp: a RIFF/WEBP VP8 key frame of 64x64", r)
    for fmt, check in (("jpeg", lambda b: (jpeg_info(b) or {}).get("size")), ("webp", webp_info)):
        r = gen(c, size="64x64", output_format=fmt, response_format="url")
        u = r.json()["data"][0]["url"] if r.status == 200 else ""
        img = c.get(u[u.index("/v1/"):]) if u else None
        t.ok(img is not None and img.headers.get("content-type") == f"image/{fmt}" and check(img.body) == (64, 64),
             f"the URL of a {fmt} image serves image/{fmt}", img)
    sizes = {}
    for q in (5, 100):
        r = gen(c, size="64x64", output_format="jpeg", output_compression=q)
        sizes[q] = len(first_image(r)) if r.status == 200 else 0
        t.eq(job_request(c, r).get("output_compression"), q, f"output_compression {q} is recorded in the job")
    t.ok(0 < sizes[5] < sizes[100], "output_compression 5 gives a smaller JPEG than 100", sizes)


def check_size_and_hints(t, c):
    r = gen(c)
    t.ok(r.status == 200 and png_info(first_image(r)) == (32, 32), "no size: the configured default 32x32", r)
    r = gen(c, size="auto")
    t.ok(r.status == 200 and r.json().get("size") == "64x64" and png_info(first_image(r)) == (64, 64),
         "size auto: the model's native 64x64, not the default", r)
    base = None
    for q in ("auto", "standard", "hd", "low", "medium", "high"):
        r = gen(c, size="64x64", quality=q)
        rq = job_request(c, r)
        t.ok(r.status == 200 and rq.get("quality") == q, f"quality {q!r} accepted and recorded", r)
        steps = (rq.get("steps"), rq.get("timesteps"), rq.get("width"), rq.get("height"))
        base = base or steps
        t.eq(steps, base, f"quality {q!r} changes neither steps, timesteps nor size")
    for s in ("vivid", "natural"):
        r = gen(c, size="64x64", style=s, user="someone", model="dall-e-3")
        t.ok(r.status == 200 and job_request(c, r).get("style") == s,
             f"style {s!r} accepted and recorded (with user and model ignored)", r)


def check_errors(t, c):
    cases = [({"response_format": "png"}, "response_format"), ({"response_format": 1}, "response_format"),
             ({"output_format": "gif"}, "output_format"), ({"output_compression": 101}, "output_compression"),
             ({"output_format": "jpeg", "output_compression": -1}, "output_compression"),
             ({"output_format": "jpeg", "output_compression": "50"}, "output_compression"),
             ({"output_compression": 50}, "output_compression"), ({"quality": "ultra"}, "quality"),
             ({"style": "pretty"}, "style"), ({"size": "autox"}, "size"), ({"size": "100x100"}, "size"),
             ({"size": "4096x4096"}, "size"), ({"n": 0}, "n"), ({"user": 5}, "user"), ({"seed": 1}, "seed"),
             ({"prompt": None}, "prompt")]
    for extra, param in cases:
        body = {"prompt": "x", **extra}
        body = {k: v for k, v in body.items() if v is not None}
        r = c.post(GEN, body)
        e = r.error()
        t.ok(r.status == 400 and e.get("param") == param and e.get("type") == "invalid_request_error"
             and e.get("code") == "invalid_argument" and param in e.get("message", "") and "field" not in e,
             f"{extra}: 400 in OpenAI's shape, param {param!r}", r)
    r = c.request("POST", GEN, b'{"prompt": ', headers={"Content-Type": "application/json"})
    e = r.error()
    t.ok(r.status == 400 and e.get("code") == "invalid_json" and e.get("param") is None
         and e.get("type") == "invalid_request_error", "malformed JSON: OpenAI shape, param null", r)
    r = c.get(GEN)
    t.ok(r.status == 405 and r.error().get("code") == "method_not_allowed" and "type" in r.error(),
         "GET on the route: 405 in OpenAI's shape", r)
    r = c.post("/v1/generate", {"prompt": "x", "width": 7})
    t.ok(r.status == 400 and r.error().get("field") == "width" and "type" not in r.error(),
         "other routes keep the daemon's error shape", r)


def check_cors(t, c):
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    r = c.request("OPTIONS", GEN, headers=pre)
    h = r.headers
    t.ok(r.status == 204 and h.get("access-control-allow-origin") == ORIGIN
         and "POST" in h.get("access-control-allow-methods", "")
         and {"Authorization", "Content-Type"} <= set(x.strip() for x in h.get("access-control-allow-headers", "").split(","))
         and h.get("access-control-max-age") and "Origin" in h.get("vary", ""),
         "preflight from an allowed origin: 204 with Allow-Origin, -Methods, -Headers, Max-Age, Vary", r)
    r = c.request("OPTIONS", "/v1/jobs/gen_00000000000000000000", headers={**pre, "Origin": "http://localhost:3000",
                                                                        "Access-Control-Request-Method": "DELETE"})
    t.ok(r.status == 204 and r.headers.get("access-control-allow-methods") == "GET, DELETE, OPTIONS"
         and r.headers.get("access-control-allow-origin") == "http://localhost:3000",
         "preflight on a job: the path's own methods, the second listed origin", r)
    r = c.request("OPTIONS", GEN, headers={**pre, "Origin": "https://evil.example.com"})
    t.ok(r.status == 403 and "access-control-allow-origin" not in r.headers
         and "access-control-allow-methods" not in r.headers and r.error().get("code") == "cors_forbidden",
         "preflight from another origin: 403 without any Access-Control-Allow header", r)
    r = c.request("OPTIONS", GEN)
    t.ok(r.status == 204 and r.headers.get("allow") == "POST, OPTIONS" and "access-control-allow-origin" not in r.headers,
         "OPTIONS without Origin: 204 with Allow", r)
    t.eq(c.request("OPTIONS", "/v1/nope", headers=pre).status, 404, "OPTIONS on an unknown path: 404")
    r = c.post(GEN, {"prompt": "x", "size": "64x64"}, headers={"Origin": ORIGIN})
    t.ok(r.status == 200 and r.headers.get("access-control-allow-origin") == ORIGIN
         and "X-Seed" in r.headers.get("access-control-expose-headers", ""),
         "a call from an allowed origin: Allow-Origin and Expose-Headers on the answer", r)
    r = c.post(GEN, {"prompt": "x", "size": "64by64"}, headers={"Origin": ORIGIN})
    t.ok(r.status == 400 and r.headers.get("access-control-allow-origin") == ORIGIN,
         "errors carry the CORS headers too (the page can read them)", r)
    r = c.post(GEN, {"prompt": "x", "size": "64x64"}, headers={"Origin": "https://evil.example.com"})
    t.ok(r.status == 200 and "access-control-allow-origin" not in r.headers and "Origin" in r.headers.get("vary", ""),
         "a call from another origin is answered without Allow-Origin (the browser hides it)", r)
    r = c.get("/healthz")
    t.ok("access-control-allow-origin" not in r.headers, "no Origin: no Allow-Origin", r)
    opts = c.get("/v1/config").json()["options"]
    t.ok(opts.get("cors_origins") == f"{ORIGIN},http://localhost:3000" and opts.get("trust_proxy") is False
         and opts.get("public_url") == "", "GET /v1/config shows cors_origins, trust_proxy, public_url", opts)


def check_proxy(t, c):
    r = c.post(GEN, {"prompt": "x", "response_format": "url"},
               headers={"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "img.example.com:8443, a"})
    u = r.json()["data"][0]["url"] if r.status == 200 else ""
    t.ok(u.startswith("https://img.example.com:8443/v1/jobs/") and u.endswith("/images/0"),
         "trust_proxy: the first X-Forwarded-Proto and -Host make the URL", r)
    r = c.post(GEN, {"prompt": "x", "response_format": "url"},
               headers={"X-Forwarded-Host": "bad host/\"x", "X-Forwarded-Proto": "gopher"})
    t.ok(r.status == 200 and r.json()["data"][0]["url"].startswith(f"http://127.0.0.1:{c.port}/"),
         "malformed forwarded values fall back to http and the Host header", r)
    r = c.request("OPTIONS", GEN, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    t.ok(r.status == 403 and "access-control-allow-origin" not in r.headers, "no cors_origins: preflights refused", r)
    r = c.post(GEN, {"prompt": "x", "size": "64x64"}, headers={"Origin": ORIGIN})
    t.ok(r.status == 200 and "access-control-allow-origin" not in r.headers and "vary" not in r.headers,
         "no cors_origins: no CORS headers, no Vary", r)


def check_config(t):
    def run(*args):
        p = subprocess.run([BIN, "serve", *args, "--check-config"], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stderr
    for opt, val in (("public_url", "ftp://x"), ("public_url", "https://"), ("public_url", "https://a/b?c"),
                     ("cors_origins", "https://a.example/"), ("cors_origins", "a.example")):
        rc, err = run(f"--{opt}", val)
        t.ok(rc == 78 and opt in err, f"--{opt} {val!r}: a configuration error (78) naming the option", (rc, err))
    rc, err = run("--public_url", "https://example.com/sdxld/", "--cors_origins", "*")
    t.eq(rc, 0, "public_url with a path and cors_origins * validate")


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-openai-")
    check_config(t)
    with Daemon(*SMALL, "--cors_origins", f"{ORIGIN},http://localhost:3000", tmp=tmp) as d:
        check_b64_and_url(t, d.client)
        check_formats(t, d.client)
        check_size_and_hints(t, d.client)
        check_errors(t, d.client)
        check_cors(t, d.client)
    with Daemon(*SMALL, "--trust_proxy", "true", tmp=tmp) as d:
        check_proxy(t, d.client)
    with Daemon(*SMALL, "--public_url", "https://example.com/sdxld/", "--trust_proxy", "true", tmp=tmp) as d:
        r = d.client.post(GEN, {"prompt": "x", "response_format": "url"}, headers={"X-Forwarded-Host": "other.example"})
        u = r.json()["data"][0]["url"] if r.status == 200 else ""
        t.ok(u.startswith("https://example.com/sdxld/v1/jobs/gen_"), "public_url: URLs under it (trailing slash "
             "dropped), whatever the forwarded headers say", r)
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        t.diag(f"daemon logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

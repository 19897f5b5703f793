#!/usr/bin/env python3
"""test_daemon.py — `sdxld serve` end to end, as a client over real HTTP on loopback,
with the golden tiny model on the CPU.  TAP output.

Daemons started here:
  1. the API suite (checks.py): PNG/JSON, seeds, batching, async, cancel, SSE, errors,
     413/415/404/405, disconnects, metrics;
  2. queue_max 2, max_batch 1: 429 + Retry-After, then SIGTERM with queued work;
  3. bearer-token auth (api and admin tokens, SIGHUP reload);
  4. the job table's bounds (eviction and its 404), abandoned running sync requests;
  5. the built-in model (empty `model`): its path in /v1/config, the CPU start line, the
     web page's default prompt drawn;
plus configuration handling (exit codes, the shipped config file, the built-in default).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checks  # noqa: E402
from harness import BIN, MODEL, SCALE, Daemon, png_rgb, run_main  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def check_config(t, tmp):
    def run(*args):
        p = subprocess.run([BIN, "serve", *args], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    rc, out, err = run("--help")
    t.ok(rc == 0 and "--max_batch" in out and "--queue_max" in out and "default: 4" in out,
         "serve --help lists the options from the table", out[:500])
    rc, out, err = run("--print-config")
    with open(os.path.join(REPO, "conf", "sdxld.conf")) as f:
        shipped = f.read()
    t.ok(rc == 0 and out == shipped, "conf/sdxld.conf is exactly what --print-config generates "
         "(every option, default and comment)", "regenerate with: sdxld serve --print-config > conf/sdxld.conf")
    rc, out, err = run("--config", os.path.join(REPO, "conf", "sdxld.conf"), "--check-config")
    t.ok(rc == 0 and '"max_batch"' in out, "the shipped config file validates", err)
    check_builtin_default(t)
    rc, out, err = run("--max_batch", "0", "--check-config")
    t.ok(rc == 78 and "max_batch" in err, "an out-of-range flag exits 78 naming the option", (rc, err))
    rc, out, err = run("--no-such-option", "1")
    t.ok(rc == 2 and "no-such-option" in err, "an unknown flag exits 2", (rc, err))
    bad = os.path.join(tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write("# comment\nlisten = 127.0.0.1:0\nqueue_mx = 3\n")
    rc, out, err = run("--config", bad)
    t.ok(rc == 78 and "bad.conf:3" in err and "queue_mx" in err,
         "an unknown option in the file exits 78 naming file:line", (rc, err))
    with open(bad, "w") as f:
        f.write("max_batch = 2\nmax_batch = 3\n")
    rc, out, err = run("--config", bad, "--check-config")
    t.ok(rc == 78 and "twice" in err, "an option set twice exits 78", (rc, err))
    good = os.path.join(tmp, "good.conf")
    with open(good, "w") as f:
        f.write('max_batch = 2\nunet = ""\nwarmup = false\n')
    rc, out, err = run("--config", good, "--max_batch", "3", "--check-config")
    t.ok(rc == 0 and '"max_batch": 3' in out and '"warmup": false' in out,
         "flags override the file", out)
    rc, out, err = run("--listen", "nonsense", "--model", MODEL)
    t.ok(rc == 78 and "listen" in err, "an invalid listen address exits 78", (rc, err))
    p = subprocess.run([BIN, "serve", "--model", os.path.join(tmp, "no-such-model"), "--listen",
                        "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    t.ok(p.returncode == 78 and "no-such-model" in p.stderr, "a missing model folder exits 78",
         (p.returncode, p.stderr[-500:]))


def check_builtin_default(t):
    """An empty `model` is the built-in model, and every view of the config table says
    so: --help names the path this binary resolves, --check-config (and GET /v1/config,
    the same JSON) shows that path as the effective value, the shipped config file and
    docs/daemon.md say what empty means (never a made-up /var/lib/... folder)."""
    env = {k: v for k, v in os.environ.items() if k != "SDXLD_MODEL"}
    builtin = os.path.realpath(os.path.join(REPO, "models", "shapes-small"))
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=60, env=env)
    m = re.search(r"^  --model .*\n +\(string; default: (.*)\)$", p.stdout, re.M)
    t.eq(m and m.group(1), f'"" = the built-in model, here {builtin}',
         "serve --help: model's default is the built-in model, with its resolved path")
    p = subprocess.run([BIN, "serve", "--check-config"], capture_output=True, text=True, timeout=60, env=env)
    eff = json.loads(p.stdout) if p.returncode == 0 else {}
    t.eq(eff.get("model"), builtin, "--check-config: the effective model is that path")
    with open(os.path.join(REPO, "conf", "sdxld.conf")) as f:
        conf = f.read()
    t.ok(re.search(r'^# \("" = the built-in model: models/shapes-small[^)]*\n(#[^\n]*\n)*model = ""$', conf, re.M),
         "conf/sdxld.conf: model = \"\" with what empty means", conf[:200])
    with open(os.path.join(REPO, "docs", "daemon.md")) as f:
        row = [line for line in f if line.startswith("| `model`, `unet` |")]
    t.ok(len(row) == 1 and '`""` = the built-in model' in row[0] and "/var/lib" not in row[0],
         "docs/daemon.md's option table: model's default is the built-in model", row)


# The shapes dataset's words and colours (src/train/data.c): what the built-in model
# learnt to draw.
SHAPE_COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220),
                 "yellow": (245, 220, 40), "purple": (150, 50, 190), "orange": (245, 130, 20),
                 "white": (245, 245, 245), "black": (20, 20, 20)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128),
               "light blue": (150, 200, 240), "beige": (225, 205, 160)}
POSITIONS = ["at the top left", "at the top", "at the top right", "on the left", "in the center",
             "on the right", "at the bottom left", "at the bottom", "at the bottom right"]


def nearest(rgb):
    pal = list(SHAPE_COLOURS.values()) + list(BACKGROUNDS.values())
    return min(pal, key=lambda q: sum((a - b) ** 2 for a, b in zip(rgb, q)))


def mean_rgb(w, px, points):
    return tuple(sum(px[3 * (y * w + x) + k] for x, y in points) / len(points) for k in range(3))


def check_builtin_daemon(t, tmp):
    """A daemon with an empty `model`: the built-in model, its path in GET /v1/config; it
    says once that it serves on the CPU (no CUDA warning); the web page's default prompt
    is one of the shapes dataset's captions (one shape) and the model draws it: at seed 1
    the named cell's centre has the named colour and the border the named background."""
    with Daemon(model="", tmp=tmp) as d:
        c = d.client
        cfg = c.get("/v1/config").json()
        t.eq(cfg["options"]["model"], os.path.realpath(os.path.join(REPO, "models", "shapes-small")),
             "GET /v1/config: an empty model shows as the built-in model's path")
        log = d.log_text()
        warned = [line for line in log.splitlines() if " W " in line and re.search("cuda|driver", line, re.I)]
        t.ok(log.count("serving on the CPU") == 1 and not warned,
             "the start log says once that it serves on the CPU, and warns nothing about CUDA", warned)
        page = c.get("/").body.decode()
        m = re.search(r'<textarea id="prompt">([^<]*)</textarea>', page)
        prompt = m.group(1) if m else ""
        g = re.fullmatch(r"an? (\w+) (circle|square|triangle|star|cross) (.+), on a (.+) background", prompt)
        ok = g and g.group(1) in SHAPE_COLOURS and g.group(3) in POSITIONS and g.group(4) in BACKGROUNDS
        t.ok(ok, "the web page's default prompt is a shapes caption (colour, shape, position, background)", prompt)
        r = c.generate(prompt=prompt, seed=1, response_format="png")
        img = png_rgb(r.body) if r.status == 200 else None
        if not (ok and img):
            t.ok(False, "the built-in model draws the web page's default prompt", r)
            return
        w, h, px = img
        cell = POSITIONS.index(g.group(3))
        cx, cy = int((cell % 3 + 0.5) * w / 3), int((cell // 3 + 0.5) * h / 3)
        centre = mean_rgb(w, px, [(cx + dx, cy + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
        border = mean_rgb(w, px, [(x, 0) for x in range(w)] + [(x, h - 1) for x in range(w)])
        t.ok(nearest(centre) == SHAPE_COLOURS[g.group(1)] and nearest(border) == BACKGROUNDS[g.group(4)],
             f"the built-in model draws it (seed 1): {g.group(1)} at the centre of the cell "
             f"{g.group(3)}, {g.group(4)} at the border", (centre, border))
        t.eq(d.stop(), 0, "the built-in model's daemon exits 0 on SIGTERM")


def check_single_request(t, tmp):
    req = os.path.join(tmp, "req.http")
    body = b'{"prompt": "single", "seed": 5, "width": 64, "height": 64, "response_format": "png"}'
    with open(req, "wb") as f:
        f.write(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)
    p = subprocess.run([BIN, "serve", "--model", MODEL, "--threads", "1", "--single-request", req],
                       capture_output=True, timeout=120)
    t.ok(p.returncode == 0 and p.stdout.startswith(b"HTTP/1.1 200") and b"X-Seed: 5" in p.stdout
         and b"\x89PNG" in p.stdout, "--single-request drives one raw request through the daemon",
         (p.returncode, p.stdout[:300], p.stderr[-500:]))
    with open(req, "wb") as f:
        f.write(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 8\r\n\r\n{\"n\": [}")
    p = subprocess.run([BIN, "serve", "--model", MODEL, "--threads", "1", "--single-request", req],
                       capture_output=True, timeout=120)
    t.ok(p.returncode == 0 and p.stdout.startswith(b"HTTP/1.1 400") and b"invalid_json" in p.stdout,
         "--single-request: a malformed body gets its 400", (p.returncode, p.stdout[:300]))
    with open(req, "wb") as f:
        f.write(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{")
    p = subprocess.run([BIN, "serve", "--model", MODEL, "--threads", "1", "--single-request", req],
                       capture_output=True, timeout=120)
    t.ok(p.returncode == 1 and not p.stdout,
         "--single-request: an incomplete request ends without an answer (exit 1; a hang is the "
         "subprocess timeout)", (p.returncode, p.stdout[:200]))


def check_auth(t, tmp):
    api = os.path.join(tmp, "api.tokens")
    adm = os.path.join(tmp, "admin.tokens")
    with open(api, "w") as f:
        f.write("# generation tokens\napi-token-0123456789abcdef\n")
    with open(adm, "w") as f:
        f.write("admin-token-0123456789abcdef\n")
    os.chmod(api, 0o600)
    os.chmod(adm, 0o600)
    with Daemon("--api_token_file", api, "--admin_token_file", adm, tmp=tmp) as d:
        c = d.client
        t.eq(c.get("/healthz").status, 200, "auth on: /healthz stays open")
        t.eq(c.get("/metrics").status, 200, "auth on: /metrics stays open")
        r = c.generate(prompt="x", seed=1)
        t.ok(r.status == 401 and r.error().get("code") == "unauthorized"
             and r.headers.get("www-authenticate", "").startswith("Bearer"),
             "auth on: no token is 401 with WWW-Authenticate", r)
        r = c.generate(prompt="x", seed=1, headers=None) if False else c.request(
            "POST", "/v1/generate", {"prompt": "x", "width": 64, "height": 64}, token="api-token-0123456789abcdeX")
        t.eq(r.status, 401, "auth on: a wrong token is 401")
        r = c.request("POST", "/v1/generate", {"prompt": "x", "width": 64, "height": 64},
                      token="api-token-0123456789abcdef")
        t.eq(r.status, 200, "auth on: the api token generates")
        r = c.request("GET", "/v1/jobs", token="admin-token-0123456789abcdef")
        t.eq(r.status, 200, "auth on: the admin token also works for generation endpoints")
        r = c.request("POST", "/v1/train", {"teacher": "x"}, token="api-token-0123456789abcdef")
        t.eq(r.status, 401, "auth on: an api token is refused on admin endpoints")
        r = c.request("POST", "/v1/train", {"teacher": "x"}, token="admin-token-0123456789abcdef")
        t.eq(r.status, 400, "auth on: the admin token passes admin endpoints (to validation)")
        r = c.request("GET", "/v1/jobs/gen_00000000000000000000", token="nope")
        t.eq(r.status, 401, "auth is checked before the job lookup (no id probing)")
        with open(api, "w") as f:
            f.write("new-api-token-0123456789abcdef\n")
        d.signal(signal.SIGHUP)
        time.sleep(0.5)
        r = c.request("GET", "/v1/jobs", token="api-token-0123456789abcdef")
        r2 = c.request("GET", "/v1/jobs", token="new-api-token-0123456789abcdef")
        t.ok(r.status == 401 and r2.status == 200, "SIGHUP reloads the token files", (r, r2))
        t.ok("token files reloaded" in d.log_text(), "the reload is logged")
        t.eq(d.stop(), 0, "auth daemon exits 0 on SIGTERM")


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def check_strict_fields(t, c):
    """Hostile-testing findings: a seed past 2^63 - 1 is a 400 naming seed (not
    invalid_json); the OpenAI size takes exactly WIDTHxHEIGHT."""
    for body in ('{"prompt": "x", "seed": 9223372036854775808}', '{"prompt": "x", "seed" :\n 1' + "0" * 30 + '}'):
        r = c.request("POST", "/v1/generate", body.encode(), headers={"Content-Type": "application/json"})
        e = r.error()
        t.ok(r.status == 400 and e.get("code") == "invalid_argument" and e.get("field") == "seed",
             "a seed past 2^63 - 1 is a 400 naming seed", r)
    r = c.post("/v1/generate", {"prompt": "x", "seed": 9223372036854775807, "width": 64, "height": 64})
    t.eq(r.status, 200, "seed 2^63 - 1 itself is accepted")
    g = c.post("/v1/generate", {"prompt": "x", "async": True, "width": 64, "height": 64})
    jid = g.json()["id"] if g.status == 202 else None
    if jid:
        c.wait_job(jid)
    for last in ("9223372036854775807", "99999999999999999999999", "2147483648"):
        r = c.request("GET", f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": last})
        t.eq(r.status, 204, f"Last-Event-ID {last} after a finished job: 204 (seen everything), no overflow")
    for size in ("64x 64", " 64x64", "64 x64", "64x64 ", "64X64", "x64", "64x"):
        r = c.post("/v1/images/generations", {"prompt": "x", "size": size})
        t.ok(r.status == 400 and "size" in json.dumps(r.error()), f"OpenAI size {size!r} is refused naming size", r)


def png_image_chunks(data):
    """A PNG's IHDR and IDAT chunks (the pixels), without its text chunks."""
    out, i = [], 8
    while i + 8 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if kind in (b"IHDR", b"IDAT"):
            out.append(data[i:i + 12 + n])
        i += 12 + n
    return b"".join(out)


def check_single_file(t, tmp):
    """`sdxld convert` to one original-layout file, and `serve --model FILE` with its
    configs (model_config) and tokenizers: the same pixels as the folder it came from."""
    single = os.path.join(tmp, "tiny-single.safetensors")
    p = subprocess.run([BIN, "convert", "--model", MODEL, "--to", "single-file", "--out", single, "--dtype", "f32"],
                       capture_output=True, text=True, timeout=300)
    if not t.ok(p.returncode == 0 and os.path.isfile(single), "sdxld convert --to single-file", p.stderr[-500:]):
        return
    body = {"prompt": "a red cube", "seed": 11, "width": 64, "height": 64, "response_format": "png"}
    with Daemon(tmp=tmp) as d:
        ref = d.client.post("/v1/generate", body)
    with Daemon("--model_config", MODEL, "--tokenizers", MODEL, model=single, tmp=tmp) as d:
        r = d.client.post("/v1/generate", body)
        t.ok(r.status == 200 and ref.status == 200 and png_image_chunks(r.body) == png_image_chunks(ref.body),
             "serve --model FILE (+ model_config, tokenizers): the folder's pixels, byte for byte", r)
    p = subprocess.run([BIN, "serve", "--model", single, "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                       timeout=120)
    t.ok(p.returncode == 78 and "config" in p.stderr, "a single file that is not SDXL base without model_config: "
         "a configuration error naming what to give", (p.returncode, p.stderr[-300:]))


def check_retained_cap(t, tmp):
    """Submit-and-cancel with 60 kB prompts through HTTP: every request accepted, the job
    table stays within retained_jobs_max/_mb (the /metrics figures), the oldest finished
    jobs are evicted (404)."""
    with Daemon("--retained_jobs_max", "16", "--retained_jobs_mb", "1", "--queue_max", "1000", tmp=tmp) as d:
        c = d.client
        prompt = "a red circle " * 4600
        ids, codes, within = [], [], True
        for i in range(60):
            r = c.post("/v1/generate", {"prompt": prompt, "seed": i, "async": True})
            codes.append(r.status)
            if r.status == 202:
                ids.append(r.json()["id"])
                c.delete(f"/v1/jobs/{ids[-1]}")
            m = c.get("/metrics").body.decode()
            kept, kb = metric(m, "sdxld_jobs_retained"), metric(m, "sdxld_jobs_retained_bytes")
            within &= kept is not None and kept <= 16 and kb is not None and kb <= (1 << 20)
        t.ok(all(s == 202 for s in codes), "60 submit-and-cancel jobs with 60 kB prompts: all accepted", codes)
        t.ok(within, "the job table stayed within retained_jobs_max 16 and retained_jobs_mb 1 (/metrics)")
        m = c.get("/metrics").body.decode()
        t.ok((metric(m, "sdxld_jobs_evicted_total") or 0) >= 44, "finished jobs were evicted to make room",
             metric(m, "sdxld_jobs_evicted_total"))
        r = c.get(f"/v1/jobs/{ids[0]}")
        msg = r.error().get("message", "")
        t.ok(r.status == 404 and "retained_jobs_" in msg and "result_ttl_s ago" not in msg,
             "the oldest evicted job answers 404 naming the bound that evicted it, not the TTL", r)
        r = c.get("/v1/jobs/gen_00000000000000000000")
        t.ok(r.status == 404 and "unknown" in r.error().get("message", ""), "an id never seen is 404 unknown", r)
        t.eq(c.get(f"/v1/jobs/{ids[-1]}").status, 200, "the newest is kept")


def running_job(c, seen):
    """The id of a running generation job not in seen (polled; None after a generous wait)."""
    end = time.time() + 300 * SCALE
    while time.time() < end:
        for j in c.get("/v1/jobs?status=running&limit=10").json()["jobs"]:
            if j["id"] not in seen:
                return j["id"]
        time.sleep(0.05)
    return None


def check_abandoned_running(t, tmp):
    """Hostile-testing finding: a sync 1536x1536 n=4 request whose client went away once its
    batch ran kept the worker busy to the end (>10 min).  A byte the client sent after its
    body hid the close from the watcher (it peeked at the byte, not at the end of the
    stream), and a batch stopped only between sampler steps.  Now each route's job ends
    cancelled (client_gone), its batch stops in the middle of a pass (the engine polls
    between blocks), no image is made, and the worker serves the next request."""
    with Daemon("--max_batch", "4", "--batch_window_ms", "0", tmp=tmp) as d:
        c = d.client
        bodies = [("/v1/generate", {"prompt": "abandoned", "width": 1536, "height": 1536, "n": 4,
                                    "response_format": "b64_json"}),
                  ("/v1/images/generations", {"prompt": "abandoned too", "size": "1536x1536", "n": 4})]
        seen = set()
        for route, body in bodies:
            raw = json.dumps(body).encode()
            s = socket.create_connection((c.host, c.port))
            s.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
            jid = running_job(c, seen)
            s.sendall(b"\r\n")   # a stray CRLF after the body, as some clients send
            s.close()
            if not t.ok(jid, f"{route}: the sync job runs", d.log_text()[-2000:]):
                continue
            seen.add(jid)
            j = c.wait_job(jid, timeout=900)
            t.ok(j["status"] == "cancelled" and (j["error"] or {}).get("code") == "client_gone",
                 f"{route}: the abandoned running job ends cancelled (client_gone)", j)
        end = time.time() + 300 * SCALE   # the job is final at once; its batch stops a moment later
        while True:
            m = c.get("/metrics").body.decode()
            if (metric(m, "sdxld_batches_stopped_total") or 0) >= 2 or time.time() > end:
                break
            time.sleep(0.05)
        t.ok((metric(m, "sdxld_batches_stopped_total") or 0) >= 2 and metric(m, "sdxld_images_generated_total") == 0,
             "both batches stopped early and made no image (/metrics)",
             [ln for ln in m.splitlines() if "batches" in ln or "images_generated" in ln])
        t.ok(d.log_text().count("stopped after") >= 2, "the stopped batches are logged")
        r = c.generate(prompt="the next one", width=64, height=64)
        t.eq(r.status, 200, "the worker serves the next request")


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-test-")
    check_config(t, tmp)
    check_single_request(t, tmp)
    with Daemon("--max_batch", "4", "--batch_window_ms", "60", "--queue_max", "64", tmp=tmp) as d:
        t.diag(f"daemon 1 on port {d.port}")
        checks.run_api_suite(t, d.client)
        check_strict_fields(t, d.client)
        t.ok("POST /v1/generate 200" in d.log_text(), "requests are access-logged")
        t.ok(re.search(r" W .*job \S*gen_\w+: 128x64 is more than 1\.5x the model's native 64x64", d.log_text()),
             "a size far above the native one is logged as a warning naming the job")
        t.eq(d.stop(), 0, "daemon 1 exits 0 on SIGTERM")
    with Daemon("--max_batch", "1", "--queue_max", "2", "--shutdown_timeout_s", "30", tmp=tmp) as d:
        checks.check_queue_full(t, d.client)
    with Daemon("--max_batch", "1", "--queue_max", "64", "--shutdown_timeout_s", "1", tmp=tmp) as d:
        checks.check_sigterm(t, d, d.client, d.log_text)
    check_auth(t, tmp)
    check_retained_cap(t, tmp)
    check_abandoned_running(t, tmp)
    check_single_file(t, tmp)
    check_builtin_daemon(t, tmp)
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)   # kept on failure: the daemon logs are there
    else:
        t.diag(f"daemon logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

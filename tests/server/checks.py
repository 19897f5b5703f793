"""checks.py — the HTTP contract checks (docs/api.md), run against any endpoint: the
daemon itself (test_daemon.py) or nginx in front of it (test_nginx.py).

Each check takes a TAP object and a Client.  The daemon under test is expected to run
the tiny model with max_batch >= 2, a batch window of ~50 ms and queue_max >= 32.
"""
import base64
import json
import re
import socket
import threading
import time

from harness import png_info, png_text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def b64png(img):
    return base64.b64decode(img["b64_json"])


def check_health(t, c):
    r = c.get("/healthz")
    t.ok(r.status == 200 and r.json()["status"] == "ok", "GET /healthz is 200", r)
    r = c.get("/readyz")
    t.ok(r.status == 200 and r.json()["status"] == "ready", "GET /readyz is 200 once warmed up", r)
    r = c.request("HEAD", "/healthz")
    t.eq(r.status, 200, "HEAD /healthz is 200")
    r = c.get("/v1/models")
    ok = r.status == 200 and r.json()["data"] and r.json()["data"][0]["id"] == "tiny-sdxl-a"
    t.ok(ok, "GET /v1/models lists the loaded model", r)
    r = c.get("/v1/config")
    ok = r.status == 200 and r.json()["options"]["max_batch"] >= 1 and "sources" in r.json()
    t.ok(ok, "GET /v1/config returns the effective options and their sources", r)
    r = c.get("/")
    t.ok(r.status == 200 and b"<html" in r.body and r.headers["content-type"].startswith("text/html"),
         "GET / serves the web page", r)


def check_png(t, c):
    r = c.generate(prompt="a red cube", seed=42, response_format="png")
    t.ok(r.status == 200 and r.headers.get("content-type") == "image/png"
         and r.body.startswith(PNG_MAGIC), "response_format png: 200 image/png", r)
    t.eq(r.headers.get("x-seed"), "42", "X-Seed echoes the seed")
    t.ok(re.fullmatch(r"gen_[0-9a-f]{20}", r.headers.get("x-job-id", "")), "X-Job-Id names the job", r.headers)
    params = png_text(r.body, "parameters") or ""
    t.ok(params.startswith("a red cube\n") and "Seed: 42" in params and "Size: 64x64" in params
         and "Steps: 4" in params, "PNG carries the A1111 parameters chunk", params)
    r2 = c.post("/v1/generate", {"prompt": "a red cube", "seed": 42, "width": 64, "height": 64},
                headers={"Accept": "image/png"})
    t.ok(r2.status == 200 and r2.headers.get("content-type") == "image/png",
         "Accept: image/png with n=1 returns the PNG itself", r2)
    t.ok(r2.body == r.body, "identical requests give identical PNG bytes")
    return r.body


def check_json(t, c, png42):
    r = c.generate(prompt="a red cube", seed=42)
    ok = r.status == 200 and r.headers["content-type"].startswith("application/json")
    t.ok(ok, "default response is JSON", r)
    if not ok:
        return
    j = r.json()
    t.ok(set(j) >= {"id", "created", "images", "timings"} and len(j["images"]) == 1,
         "JSON has id, created, images, timings", j.keys())
    t.eq(j["images"][0]["seed"], 42, "JSON echoes the seed")
    t.ok(b64png(j["images"][0]) == png42, "b64_json decodes to the same PNG bytes as the png response")
    t.ok(all(k in j["timings"] for k in ("queue_ms", "text_ms", "unet_ms", "vae_ms")),
         "timings has queue/text/unet/vae", j["timings"])
    r = c.generate(prompt="no seed given")
    seed = r.json()["images"][0]["seed"] if r.status == 200 else -1
    t.ok(isinstance(seed, int) and 0 <= seed < 2 ** 63, "a random seed is chosen and returned", r)
    r = c.generate(prompt="word " * 120, seed=1)
    t.ok(r.status == 200 and r.json().get("truncated") is True, "a long prompt says truncated: true", r)


def check_size_warning(t, c):
    """A size far above the model's native one (over 1.5x a side; the tiny model draws
    64x64) still makes the image, and says so: `warnings` in every JSON answer and the
    job, X-Warning on a PNG answer.  The native size has none."""
    r = c.generate(prompt="a red cube", seed=3)
    t.ok(r.status == 200 and r.json().get("warnings") == [], "the native size: warnings is []", r)
    r = c.generate(prompt="a red cube", seed=3, width=128, height=64)
    w = r.json().get("warnings") if r.status == 200 else None
    t.ok(w and len(w) == 1 and "128x64" in w[0] and "native 64x64" in w[0] and "tiled" in w[0],
         "128x64 on a 64x64 model: the JSON answer warns, naming both sizes", r)
    r = c.generate(prompt="a red cube", seed=3, width=128, height=64, response_format="png")
    t.ok(r.status == 200 and "native 64x64" in r.headers.get("x-warning", ""),
         "... and the PNG answer carries it as X-Warning", r.headers)
    r = c.generate(prompt="a red cube", seed=3, width=64, height=128, **{"async": True})
    ok = r.status == 202 and len(r.json().get("warnings", [])) == 1
    t.ok(ok, "an async 64x128 job: the 202 answer warns", r)
    if ok:
        j = c.wait_job(r.json()["id"])
        t.ok(j.get("status") == "succeeded" and len(j.get("warnings", [])) == 1
             and "64x128" in j["warnings"][0], "... and so does GET /v1/jobs/{id}", j)
    r = c.post("/v1/images/generations", {"prompt": "a red cube", "size": "64x64"})
    t.ok(r.status == 200 and "x-warning" not in r.headers, "OpenAI route at the native size: no X-Warning", r)
    r = c.post("/v1/images/generations", {"prompt": "a red cube", "size": "128x128"})
    t.ok(r.status == 200 and "128x128" in r.headers.get("x-warning", ""),
         "OpenAI route at 128x128: X-Warning (the job carries the warning too)", r.headers)


def check_seeds(t, c):
    pair = c.generate(prompt="seed pair", seed=1000, n=2)
    one = c.generate(prompt="seed pair", seed=1000)
    two = c.generate(prompt="seed pair", seed=1001)
    ok = pair.status == one.status == two.status == 200
    t.ok(ok, "n=2 and single requests succeed", (pair, one, two))
    if not ok:
        return
    imgs = pair.json()["images"]
    t.eq([i["seed"] for i in imgs], [1000, 1001], "n=2 returns seeds s and s+1")
    t.ok(b64png(imgs[0]) == b64png(one.json()["images"][0]), "n=2 image 0 == single request with seed s")
    t.ok(b64png(imgs[1]) == b64png(two.json()["images"][0]), "n=2 image 1 == single request with seed s+1")


def batch_counts(c):
    text = c.get("/metrics").body.decode()
    le1 = re.search(r'^sdxld_batch_size_bucket\{le="1"\} (\d+)', text, re.M)
    cnt = re.search(r"^sdxld_batch_size_count (\d+)", text, re.M)
    return int(le1.group(1)), int(cnt.group(1))


def check_batching(t, c):
    """Concurrent requests are batched together and still give the images they give alone."""
    seeds = [2000, 2001, 2002, 2003]
    alone = {}
    for s in seeds:
        r = c.generate(prompt=f"batch {s}", seed=s, response_format="png")
        alone[s] = r.body
    le1_before, n_before = batch_counts(c)
    together, errs = {}, []

    def one(s):
        try:
            together[s] = c.generate(prompt=f"batch {s}", seed=s, response_format="png").body
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    for attempt in range(3):
        ths = [threading.Thread(target=one, args=(s,)) for s in seeds]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        le1_after, n_after = batch_counts(c)
        if (n_after - n_before) - (le1_after - le1_before) > 0:
            break
    multi = (n_after - n_before) - (le1_after - le1_before)
    t.ok(multi > 0, "concurrent compatible requests ran as a batch of more than one image",
         f"batches {n_after - n_before}, of them single {le1_after - le1_before}")
    # Regression: with OpenBLAS the CPU linear layers once rounded differently per batch
    # size (fixed: fixed-size GEMM row blocks in src/backend/cpu.c).
    same = not errs and all(together.get(s) == alone[s] for s in seeds)
    t.ok(same, "batched images are byte-identical to the same requests run alone",
         errs or [s for s in seeds if together.get(s) != alone[s]])


def check_openai(t, c):
    r = c.post("/v1/images/generations", {"prompt": "openai style", "n": 2, "size": "64x64",
                                          "response_format": "b64_json", "user": "x", "model": "any"})
    ok = r.status == 200 and len(r.json()["data"]) == 2 and "created" in r.json()
    t.ok(ok, "POST /v1/images/generations returns data[n] with b64_json", r)
    if ok:
        t.ok(all(png_info(b64png(d)) == (64, 64) for d in r.json()["data"]), "OpenAI images are 64x64 PNGs")
    # url: absolute, built from the Host the client used (through nginx too), and it serves
    r = c.post("/v1/images/generations", {"prompt": "x", "size": "64x64", "response_format": "url"})
    origin = f"http://{c.host}:{c.port}"
    url = r.json()["data"][0].get("url", "") if r.status == 200 else ""
    t.ok(url.startswith(origin + "/v1/jobs/"), "OpenAI response_format url: an absolute URL on the host "
         "the client called", r)
    img = c.get(url[len(origin):]) if url.startswith(origin + "/") else None
    t.ok(img is not None and img.status == 200 and img.headers.get("content-type") == "image/png"
         and png_info(img.body) == (64, 64), "the URL serves the image", img)
    r = c.post("/v1/images/generations", {"prompt": "x", "size": "64by64"})
    t.ok(r.status == 400 and r.error().get("param") == "size" and r.error().get("type") == "invalid_request_error",
         "a bad size is a 400 in OpenAI's error shape naming param size", r)


def check_async(t, c, png42):
    r = c.generate(prompt="a red cube", seed=42, **{"async": True})
    ok = r.status == 202 and r.json()["status"] == "queued" and "queue_position" in r.json()
    t.ok(ok, "async: 202 with id, status queued, queue_position", r)
    if not ok:
        return
    jid = r.json()["id"]
    t.eq(r.headers.get("location"), f"/v1/jobs/{jid}", "async: Location points at the job")
    j = c.wait_job(jid)
    t.eq(j["status"], "succeeded", "async job reaches succeeded")
    t.ok(j["progress"]["step"] == j["progress"]["total"] == 4 and j["started_at"] and j["finished_at"],
         "finished job has progress 4/4 and timestamps", j)
    full = c.get(f"/v1/jobs/{jid}").json()
    img = full["result"]["images"][0]
    t.ok(img["seed"] == 42 and b64png(img) == png42, "job result carries the image (b64_json) and seed")
    r = c.get(img["url"])
    t.ok(r.status == 200 and r.body == png42, "GET /v1/jobs/{id}/images/0 returns the PNG", r)
    odd = ["+0", "00", "-0", "0x0", "99999999999999999999"]
    codes = [c.get(f"/v1/jobs/{jid}/images/{i}").status for i in odd]
    t.ok(codes == [404] * len(odd), "only canonical decimal names an image: +0, 00, a huge index are 404",
         list(zip(odd, codes)))
    r = c.get("/v1/jobs?status=succeeded&limit=5")
    t.ok(r.status == 200 and any(x["id"] == jid for x in r.json()["jobs"]),
         "GET /v1/jobs?status=succeeded lists the job", r)
    r = c.get("/v1/jobs?status=bogus")
    t.ok(r.status == 400 and r.error().get("field") == "status", "GET /v1/jobs?status=bogus is 400", r)
    r = c.delete(f"/v1/jobs/{jid}")
    t.ok(r.status == 409, "DELETE of a finished job is 409", r)


def backlog(c, jobs=3, n=4, size=128):
    """Queue some slow async work so later jobs stay queued for a while."""
    ids = []
    for i in range(jobs):
        r = c.generate(prompt=f"backlog {i}", n=n, width=size, height=size, **{"async": True})
        if r.status == 202:
            ids.append(r.json()["id"])
    return ids


def check_cancel(t, c):
    ids = backlog(c)
    r = c.generate(prompt="to cancel", **{"async": True})
    jid = r.json()["id"]
    before = c.get(f"/v1/jobs/{jid}").json()
    t.ok(before["status"] == "queued" and before["queue_position"] >= 1,
         "a job behind a backlog is queued with a queue position", before)
    r = c.delete(f"/v1/jobs/{jid}")
    t.ok(r.status == 200 and r.json()["status"] == "cancelled", "DELETE cancels a queued job", r)
    j = c.get(f"/v1/jobs/{jid}").json()
    t.ok(j["status"] == "cancelled" and j["error"]["code"] == "cancelled" and j["finished_at"],
         "the cancelled job stays visible as cancelled", j)
    r = c.generate(prompt="to cancel 2", **{"async": True})
    jid2 = r.json()["id"]
    r = c.post(f"/v1/jobs/{jid2}/cancel")
    t.ok(r.status == 200 and r.json()["status"] == "cancelled", "POST /v1/jobs/{id}/cancel also cancels", r)
    t.eq(c.post(f"/v1/jobs/{jid2}/cancel").status, 409, "cancelling twice is 409")
    # a running job: cancel it while the backlog runs
    running = None
    end = time.time() + 20
    while time.time() < end and running is None:
        for i in ids:
            if c.get(f"/v1/jobs/{i}?b64_json=false").json()["status"] == "running":
                running = i
                break
        time.sleep(0.01)
    if running:
        r = c.delete(f"/v1/jobs/{running}")
        t.ok(r.status in (200, 409), "DELETE of a running job answers", r)
        j = c.wait_job(running)
        t.ok(j["status"] in ("cancelled", "succeeded"), "the running job ends cancelled (or had finished)", j)
    for i in ids:
        c.wait_job(i)
    t.ok(c.get("/readyz").status == 200, "the daemon keeps serving after cancellations")


def check_sse(t, c):
    r = c.generate(prompt="events", n=2, seed=7, **{"async": True})
    jid = r.json()["id"]
    status, events = c.sse(f"/v1/jobs/{jid}/events")
    t.eq(status, 200, "GET /v1/jobs/{id}/events is 200 text/event-stream")
    datas = [json.loads(e["data"]) for e in events if "data" in e]
    seqs = [int(e["id"]) for e in events if "id" in e]
    t.ok(len(datas) >= 3 and seqs == list(range(1, len(seqs) + 1)),
         "events carry consecutive ids from 1", seqs)
    order = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
    st = [order[d["status"]] for d in datas]
    steps = [d["progress"]["step"] for d in datas]
    t.ok(st == sorted(st) and datas[0]["status"] == "queued", "statuses in order: queued, running..., final", st)
    t.ok(steps == sorted(steps) and any(0 < s < datas[-1]["progress"]["total"] for s in steps),
         "progress steps are visible and non-decreasing", steps)
    t.ok(datas[-1]["status"] == "succeeded" and datas[-1]["progress"]["step"] == 8,
         "the stream ends with the final state (8/8 image-steps for n=2)", datas[-1] if datas else None)
    status, _ = c.sse(f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": str(seqs[-1])})
    t.eq(status, 204, "reconnecting after the final event gets 204 (EventSource stops)")
    status, ev2 = c.sse(f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": str(seqs[-2])})
    t.ok(status == 200 and len(ev2) == 1 and int(ev2[0]["id"]) == seqs[-1],
         "Last-Event-ID resumes after that event", ev2)
    # live: subscribe before the job runs
    ids = backlog(c, jobs=1)
    r = c.generate(prompt="live events", **{"async": True})
    status, events = c.sse(f"/v1/jobs/{r.json()['id']}/events")
    datas = [json.loads(e["data"]) for e in events if "data" in e]
    t.ok(status == 200 and [d["progress"]["step"] for d in datas if d["status"] == "running"] == [0, 1, 2, 3, 4],
         "a live stream sees the job start and each sampler step",
         [(d["status"], d["progress"]["step"]) for d in datas])
    t.eq(datas[-1]["status"] if datas else None, "succeeded", "a live stream ends with succeeded")
    for i in ids:
        c.wait_job(i)


def check_errors(t, c):
    def bad(body, field, desc, code=400):
        r = c.post("/v1/generate", body)
        e = r.error()
        t.ok(r.status == code and e.get("field") == field and field in e.get("message", "")
             and "code" in e, desc, r)

    r = c.post("/v1/generate", '{"prompt": "x",', headers={"Content-Type": "application/json"})
    t.ok(r.status == 400 and r.error().get("code") == "invalid_json", "malformed JSON is 400 invalid_json", r)
    r = c.post("/v1/generate", '[1,2]', headers={"Content-Type": "application/json"})
    t.ok(r.status == 400, "a JSON array body is 400", r)
    r = c.post("/v1/generate", '{"prompt":"a","prompt":"b"}', headers={"Content-Type": "application/json"})
    t.ok(r.status == 400, "duplicate keys are 400", r)
    bad({"prompt": "x", "promt": "typo"}, "promt", "an unknown field is 400 naming it")
    bad({"n": 1}, "prompt", "a missing prompt is 400 naming prompt")
    bad({"prompt": 5}, "prompt", "a non-string prompt is 400")
    bad({"prompt": "x", "width": 100000}, "width", "width out of range is 400 naming width")
    bad({"prompt": "x", "width": 60}, "width", "width not a multiple of the model's granularity is 400")
    bad({"prompt": "x", "height": -64}, "height", "negative height is 400 naming height")
    bad({"prompt": "x", "n": 0}, "n", "n=0 is 400 naming n")
    bad({"prompt": "x", "n": 1000}, "n", "n above max_n is 400 naming n")
    bad({"prompt": "x", "n": 1.5}, "n", "a fractional n is 400")
    bad({"prompt": "x", "seed": -1}, "seed", "a negative seed is 400 naming seed")
    bad({"prompt": "x", "seed": "42"}, "seed", "a string seed is 400")
    bad({"prompt": "x", "steps": 5}, "steps", "steps 5 is 400 naming steps")
    bad({"prompt": "x", "timesteps": [999, 999]}, "timesteps", "non-decreasing timesteps are 400")
    bad({"prompt": "x", "timesteps": [1000]}, "timesteps", "a timestep above 999 is 400")
    bad({"prompt": "x", "steps": 2, "timesteps": [999]}, "timesteps", "steps/timesteps mismatch is 400")
    bad({"prompt": "x", "response_format": "jpeg"}, "response_format", "an unknown response_format is 400")
    bad({"prompt": "x", "n": 2, "response_format": "png"}, "response_format", "png with n=2 is 400")
    bad({"prompt": "x", "async": "yes"}, "async", "a non-boolean async is 400")
    r = c.generate(prompt="explicit timesteps", seed=3, timesteps=[999, 499])
    t.ok(r.status == 200, "explicit strictly decreasing timesteps work", r)
    r = c.generate(prompt="one step", seed=3, steps=1)
    t.ok(r.status == 200, "steps=1 works", r)
    r = c.post("/v1/generate", "prompt=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    t.ok(r.status == 415 and r.error().get("code"), "a non-JSON content type is 415", r)
    r = c.get("/v1/nope")
    t.ok(r.status == 404 and r.error().get("code") == "not_found", "an unknown path is 404 JSON", r)
    r = c.get("/v1/jobs/gen_00000000000000000000")
    t.ok(r.status == 404 and r.error().get("code") == "not_found", "an unknown job id is 404", r)
    r = c.get("/v1/jobs/gen_00000000000000000000/events")
    t.eq(r.status, 404, "events of an unknown job is 404")
    r = c.get("/v1/generate")
    t.ok(r.status == 405 and "POST" in r.headers.get("allow", ""), "a wrong method is 405 with Allow", r)
    big = (16 << 20) + (200 << 10)   # /v1/generate takes 16 MiB (init images: routes.c IMAGE_BODY)
    r = c.post("/v1/generate", "{" + '"prompt":"' + "x" * big + '"}',
               headers={"Content-Type": "application/json"})
    t.ok(r.status == 413 and r.error().get("code") == "payload_too_large", "a huge body is 413", r)
    s = socket.create_connection((c.host, c.port), timeout=30)
    auth = f"Authorization: Bearer {c.token}\r\n" if c.token else ""
    s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
              auth.encode() + b"Content-Length: 100000000\r\n\r\n")
    head = s.recv(4096).decode(errors="replace")
    s.close()
    t.ok(head.startswith("HTTP/1.1 413"), "a 100 MB Content-Length is refused with 413 before any body",
         head[:200])
    r = chunked_post(c, "/v1/generate", b'{"prompt":"' + b"y" * (big + (100 << 10)) + b'"}')
    t.ok(r is None or r.status == 413, "a huge chunked body is 413 (or the connection is dropped)", r)
    r = c.post("/v1/train", {"teacher": "x"})
    t.ok(r.status == 400 and r.error().get("code") == "invalid_argument",
         "POST /v1/train with a bad body is 400 (tests/server/test_train.py covers training)", r)
    r = c.post("/v1/models/load", {"generator": "x"})
    t.ok(r.status == 400 and r.error().get("field") == "generator",
         "POST /v1/models/load of a missing file is 400", r)
    t.ok(c.get("/healthz").status == 200, "the daemon is alive after the bad requests")


def chunked_post(c, path, body):
    import http.client
    conn = http.client.HTTPConnection(c.host, c.port, timeout=60)
    h = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    if c.token:
        h["Authorization"] = "Bearer " + c.token
    try:
        conn.request("POST", path, body=iter([body[i:i + 16384] for i in range(0, len(body), 16384)]),
                     headers=h, encode_chunked=True)
        r = conn.getresponse()
        from harness import Response
        return Response(r.status, r.getheaders(), r.read())
    except (ConnectionError, OSError):
        return None
    finally:
        conn.close()


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                         r'(-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')


def parse_metrics(text):
    """Parse Prometheus text format 0.0.4 strictly; returns ({family: type}, [(name, labels, value)])."""
    types, samples = {}, []
    for ln in text.splitlines():
        if not ln:
            continue
        if ln.startswith("# HELP "):
            continue
        if ln.startswith("# TYPE "):
            _, _, name, typ = ln.split(" ", 3)
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), ln
            types[name] = typ
            continue
        assert not ln.startswith("#"), ln
        m = METRIC_LINE.match(ln)
        assert m, f"unparseable line: {ln!r}"
        name = m.group(1)
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert fam in types, f"sample {name} before its # TYPE"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples.append((name, labels, float(m.group(3))))
    return types, samples


def check_metrics(t, c):
    r = c.get("/metrics")
    t.ok(r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4"),
         "GET /metrics is text/plain version 0.0.4", r)
    try:
        types, samples = parse_metrics(r.body.decode())
        t.ok(True, "/metrics parses as Prometheus text format")
    except AssertionError as e:
        t.ok(False, "/metrics parses as Prometheus text format", e)
        return
    names = {s[0] for s in samples}
    want = ["sdxld_http_requests_total", "sdxld_queue_depth", "sdxld_queue_wait_seconds_bucket",
            "sdxld_generation_seconds_bucket", "sdxld_batch_size_bucket", "sdxld_images_generated_total",
            "sdxld_device_memory_bytes", "sdxld_process_resident_memory_bytes", "sdxld_ready"]
    t.ok(all(w in names for w in want), "metrics include requests, queue, histograms, images, memory",
         [w for w in want if w not in names])
    t.eq(types.get("sdxld_queue_wait_seconds"), "histogram", "queue wait is a histogram")
    reqs = [(lb, v) for n, lb, v in samples if n == "sdxld_http_requests_total"]
    t.ok(any(lb.get("route") == "/v1/generate" and lb.get("code") == "200" and v > 0 for lb, v in reqs)
         and any(lb.get("code") == "400" for lb, v in reqs),
         "requests are counted by route and status code", reqs[:10])
    imgs = [v for n, lb, v in samples if n == "sdxld_images_generated_total"]
    t.ok(imgs and imgs[0] > 0, "images generated are counted", imgs)
    buckets = [v for n, lb, v in samples if n == "sdxld_queue_wait_seconds_bucket"]
    t.ok(buckets == sorted(buckets), "histogram buckets are cumulative")


def check_disconnect(t, c):
    """A sync client that goes away: its job is cancelled, nothing leaks, others are fine."""
    ids = backlog(c, jobs=2)
    body = json.dumps({"prompt": "i will hang up", "width": 64, "height": 64}).encode()
    s = socket.create_connection((c.host, c.port))
    auth = f"Authorization: Bearer {c.token}\r\n" if c.token else ""
    s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
              auth.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.3)
    s.close()
    found = None
    end = time.time() + 10
    while time.time() < end and not found:
        for j in c.get("/v1/jobs?status=cancelled&limit=50").json()["jobs"]:
            if j["error"] and j["error"]["code"] == "client_gone":
                found = j
                break
        time.sleep(0.1)
    t.ok(found is not None, "a disconnected sync client's job is cancelled (client_gone)", found)
    for i in ids:
        t.eq(c.wait_job(i)["status"], "succeeded", "other jobs are unaffected by the disconnect")
        break
    for i in ids:
        c.wait_job(i)


def run_api_suite(t, c):
    check_health(t, c)
    png42 = check_png(t, c)
    check_json(t, c, png42)
    check_size_warning(t, c)
    check_seeds(t, c)
    check_batching(t, c)
    check_openai(t, c)
    check_async(t, c, png42)
    check_cancel(t, c)
    check_sse(t, c)
    check_errors(t, c)
    check_disconnect(t, c)
    check_metrics(t, c)


def check_queue_full(t, c):
    """Daemon with queue_max small and max_batch 1: a burst gets 429 + Retry-After."""
    codes, retry = [], None
    ids = []
    for i in range(12):
        r = c.generate(prompt=f"burst {i}", width=128, height=128, **{"async": True})
        codes.append(r.status)
        if r.status == 202:
            ids.append(r.json()["id"])
        if r.status == 429:
            retry = r.headers.get("retry-after")
            e = r.error()
    t.ok(429 in codes, "a burst beyond queue_max gets 429", codes)
    t.ok(retry is not None and retry.isdigit() and int(retry) >= 1, "429 carries Retry-After", retry)
    if 429 in codes:
        t.eq(e.get("code"), "queue_full", "429 error code is queue_full")
    for i in ids:
        c.wait_job(i)
    r = c.generate(prompt="after the burst", seed=1)
    t.eq(r.status, 200, "the queue drains and requests succeed again")


def check_sigterm(t, d, c, log_text):
    """SIGTERM: stop accepting, finish or cancel work within the bound, answer every
    waiting client, exit 0; every job either finished or its cancellation is logged."""
    import signal
    ids = []
    for i in range(40):   # far more work than shutdown_timeout_s (1 s) allows
        r = c.generate(prompt=f"drain {i}", width=128, height=128, **{"async": True})
        if r.status == 202:
            ids.append(r.json()["id"])
    sync_results = []

    def sync_one(i):
        try:
            r = c.generate(prompt=f"sync drain {i}", response_format="png")
            sync_results.append((r.status, r.error().get("code") if r.status != 200 else None))
        except Exception as e:  # noqa: BLE001
            sync_results.append(("exception", repr(e)))
    ths = [threading.Thread(target=sync_one, args=(i,)) for i in range(3)]
    for th in ths:
        th.start()
    time.sleep(0.3)
    t0 = time.time()
    d.signal(signal.SIGTERM)
    time.sleep(0.2)
    try:
        r = c.generate(prompt="too late")
        late = r.status, r.error().get("code")
    except OSError:
        late = ("refused", None)
    t.ok(late[0] in (503, "refused"), "after SIGTERM new jobs are refused (503 shutting_down)", late)
    last = {}
    while d.proc.poll() is None and time.time() - t0 < 60:
        for i in ids:
            if last.get(i) in ("succeeded", "cancelled", "failed"):
                continue
            try:
                r = c.get(f"/v1/jobs/{i}?b64_json=false", timeout=5)
                if r.status == 200:
                    last[i] = r.json()["status"]
            except OSError:
                break
        time.sleep(0.05)
    try:
        rc = d.wait(60)
    except Exception:  # noqa: BLE001
        rc = None
    elapsed = time.time() - t0
    for th in ths:
        th.join(30)
    t.eq(rc, 0, "SIGTERM exits 0")
    t.diag(f"SIGTERM to exit: {elapsed:.1f} s (a hang fails d.wait above, no wall-clock verdict)")
    t.ok(len(sync_results) == 3 and all(s == 200 or (s == 503 and code == "shutting_down")
                                        for s, code in sync_results),
         "every waiting sync client got its image or a 503 shutting_down", sync_results)
    log = log_text()
    lost = [i for i in ids if last.get(i) != "succeeded"
            and not re.search(rf"job {i} (succeeded|.*cancelled)", log)]
    t.ok(not lost, "no job lost silently: each finished or its cancellation was logged", lost)
    t.ok(any(re.search(rf"job {i} .*cancelled", log) for i in ids),
         "jobs beyond shutdown_timeout_s were cancelled and logged", log[-2000:])
    t.ok("STOPPING" in log or "draining" in log, "the log says the daemon is draining")

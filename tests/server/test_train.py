#!/usr/bin/env python3
"""test_train.py — DMD2 distillation through the daemon (POST /v1/train and friends), as a
client over real HTTP on loopback.  TAP output.

A tiny teacher (`sdxld init` with the micro UNet and VAE configs: 16x16 images) is made
under a temporary data_root, served by `sdxld serve --data_root`, and distilled on the
built-in shapes dataset:
  - bad requests: 400 naming the field (unknown field, paths escaping data_root, LoRA,
    sizes, timesteps), 404 for unknown ids; a bad teacher folder fails only its job;
  - links planted inside run, teacher and dataset folders are not followed: nothing
    outside data_root is written, read or deleted;
  - a run: progress advances with finite losses, SSE events in order, generations made
    meanwhile complete while the run is still going, a second run queues behind it;
  - DELETE: the job ends cancelled with a final checkpoint on disk; resume continues
    from it and succeeds;
  - POST /v1/models/load serves the distilled generator; GET /v1/models shows it;
  - SIGTERM during training: a final checkpoint, then exit 0;
  - with auth on, only admin tokens start, stop or load.
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, DATA, SCALE, Daemon, run_main  # noqa: E402

CONFIGS = os.path.join(DATA, "configs")
# Small model, larger learning rates than the paper's SDXL values, no warm-up.
RUN = {"real_data": "shapes", "resolution": 16, "batch": 2, "ttur": 2, "sample_every": 4,
       "checkpoint_every": 4, "cache_size": 16, "lr_generator": 1e-4, "lr_fake": 1e-4,
       "warmup": 0, "seed": 1}
LONG = 1000000   # steps of a run that is stopped, never finished


def make_teacher(root):
    out = os.path.join(root, "teacher")
    p = subprocess.run([BIN, "init", "--from", os.path.join(DATA, "tiny-sdxl-a"),
                        "--config", os.path.join(CONFIGS, "unet-micro.json"),
                        "--vae-config", os.path.join(CONFIGS, "vae-micro.json"),
                        "--out", out, "--seed", "3"], capture_output=True, text=True, timeout=300)
    if p.returncode:
        raise RuntimeError("sdxld init failed:\n" + p.stderr[-2000:])
    return out


def poll(c, jid, cond, timeout=60):
    """GET /v1/train/{id} until cond(job) holds; returns the job (or the last one seen)."""
    end = time.time() + timeout * SCALE
    j = None
    while time.time() < end:
        r = c.get(f"/v1/train/{jid}")
        if r.status == 200:
            j = r.json()
            if cond(j):
                return j
        time.sleep(0.05)
    return j


def final(j):
    return j["status"] in ("succeeded", "failed", "cancelled")


def finite_losses(j):
    l, g = j.get("losses"), j.get("grad_norm")
    return (isinstance(l, dict) and isinstance(g, dict) and
            all(isinstance(l.get(k), float) and math.isfinite(l[k]) for k in ("dm", "gan_g", "fake", "gan_d")) and
            all(isinstance(g.get(k), float) and math.isfinite(g[k]) for k in ("generator", "fake")))


def check_bad_requests(t, c, root, tmp):
    def bad(body, field, desc):
        r = c.post("/v1/train", body)
        e = r.error()
        t.ok(r.status == 400 and e.get("code") == "invalid_argument" and e.get("field") == field,
             f"POST /v1/train: {desc} is 400 naming {field}", r)

    good = dict(RUN, out="runs/bad", steps=4)
    bad(dict(good, learning_rate=1), "learning_rate", "an unknown field")
    bad(dict(good, out="../x"), "out", "a path with '..'")
    bad(dict(good, out="/etc"), "out", "an absolute path outside data_root")
    outside = os.path.join(tmp, "outside")
    os.makedirs(outside, exist_ok=True)
    os.symlink(outside, os.path.join(root, "escape"))
    bad(dict(good, out="escape/run"), "out", "a symlink leading out of data_root")
    bad(dict(good, teacher="/etc"), "teacher", "a teacher outside data_root")
    bad(dict(good, real_data="../data"), "real_data", "a dataset path with '..'")
    bad(dict(good, generator_init="nope.safetensors"), "generator_init", "a missing generator_init")
    bad(dict(good, lora_rank=-1), "lora_rank", "a negative lora_rank")
    bad(dict(good, lora_rank=2.5), "lora_rank", "a fractional lora_rank")
    bad(dict(good, lora_rank=2, lora_alpha=0), "lora_alpha", "lora_alpha 0")
    bad(dict(good, steps=0), "steps", "steps 0")
    bad(dict(good, timesteps=[999, 499, 749]), "timesteps", "timesteps not decreasing")
    bad(dict(good, resolution=12), "resolution", "a resolution that is not a multiple of 8")
    bad(dict(good, batch=100000), "batch", "an impossible batch")
    bad(dict(good, resolution=4096, cache_size=1 << 20), "cache_size", "a latent cache larger than memory")
    bad(dict(good, lr_fake="fast"), "lr_fake", "a string learning rate")
    bad(dict(good, prompts="prompts.txt"), "prompts", "a separate prompt list")
    bad({k: v for k, v in good.items() if k != "out"}, "out", "a missing out")
    bad(dict(good, resume="runs/none"), "resume", "resume of a missing run")
    r = c.get("/v1/train/train_00000000000000000000")
    t.ok(r.status == 404 and r.error().get("code") == "not_found", "GET of an unknown training id is 404", r)
    r = c.delete("/v1/train/train_00000000000000000000")
    t.eq(r.status, 404, "DELETE of an unknown training id is 404")
    r = c.get("/v1/train/train_00000000000000000000/events")
    t.eq(r.status, 404, "events of an unknown training id are 404")
    r = c.post("/v1/models/load", {"generator": "../../etc/passwd"})
    t.ok(r.status == 400 and r.error().get("field") == "generator", "models/load: a path escaping data_root is 400", r)

    # A teacher folder that passes the cheap checks but does not load: only that job fails.
    os.makedirs(os.path.join(root, "broken", "unet"))
    r = c.post("/v1/train", dict(good, teacher="broken", out="runs/broken"))
    t.eq(r.status, 202, "a teacher folder with an empty unet/ is accepted (checked when it opens)")
    if r.status == 202:
        j = poll(c, r.json()["id"], final)
        t.ok(j and j["status"] == "failed" and j["error"] and j["error"]["message"],
             "... and its job fails with a message", j)
        t.ok(c.get("/healthz").status == 200, "the daemon lives on after the failed run")


def check_links(t, c, d, root, tmp):
    """Links planted *inside* folders under data_root are never followed: a samples folder,
    a checkpoint's temporary folder and a temporary file name leading outside, and links in
    a teacher and a dataset folder.  Nothing outside data_root is written, read or deleted,
    and errors name paths relative to data_root."""
    out = os.path.join(tmp, "outside-links")
    os.makedirs(out)
    victim = os.path.join(out, "victim")
    for name in ("victim", "weights.safetensors", "state.json"):
        with open(os.path.join(out, name), "w") as f:
            f.write("outside")
    before = sorted(os.listdir(out))

    def run(name, plant, **kw):
        rd = os.path.join(root, "links", name)
        os.makedirs(rd)
        plant(rd)
        r = c.post("/v1/train", dict(RUN, out=f"links/{name}", steps=4, **kw))
        if r.status != 202:
            t.ok(False, f"links/{name}: POST /v1/train", r)
            return None, rd
        return poll(c, r.json()["id"], final), rd

    def refused(j, what):
        msg = ((j or {}).get("error") or {}).get("message", "")
        t.ok(j and j["status"] == "failed" and "symbolic link" in msg and root not in msg,
             f"{what}: the job fails naming the link, paths relative to data_root", j)

    j, _ = run("samples", lambda rd: os.symlink(out, os.path.join(rd, "samples")), sample_every=1)
    refused(j, "a samples folder linked outside")
    j, _ = run("ckpt", lambda rd: os.symlink(out, os.path.join(rd, "checkpoint-0000004.tmp")),
               sample_every=0)
    t.ok(j and j["status"] == "failed", "a checkpoint's temporary folder linked outside fails the job", j)
    tmpname = f"generator.safetensors.tmp.{d.proc.pid}"
    j, rd = run("tmpfile", lambda rd: os.symlink(victim, os.path.join(rd, tmpname)), sample_every=0)
    gen = os.path.join(rd, "generator.safetensors")
    t.ok(j and j["status"] == "succeeded" and os.path.isfile(gen) and not os.path.islink(gen)
         and not os.path.lexists(os.path.join(rd, tmpname)),
         "a planted temporary-file link is replaced, the generator written inside the run", j)
    with open(victim) as f:
        t.eq(f.read(), "outside", "... and the file it pointed to is untouched")
    t.eq(sorted(os.listdir(out)), before, "nothing was created or deleted outside data_root")
    for name in ("weights.safetensors", "state.json"):
        with open(os.path.join(out, name)) as f:
            t.eq(f.read(), "outside", f"outside {name} untouched")

    tl = os.path.join(root, "links", "teacher")
    shutil.copytree(os.path.join(root, "teacher"), tl)
    shutil.move(os.path.join(tl, "vae"), os.path.join(out, "vae"))
    os.symlink(os.path.join(out, "vae"), os.path.join(tl, "vae"))
    r = c.post("/v1/train", dict(RUN, teacher="links/teacher", out="links/t-run", steps=4))
    refused(poll(c, r.json()["id"], final) if r.status == 202 else None,
            "a teacher folder whose vae/ links outside")
    ds = os.path.join(root, "links", "data")
    os.makedirs(ds)
    with open(os.path.join(out, "captions.txt"), "w") as f:
        f.write("a.png\ta red circle\n")
    os.symlink(os.path.join(out, "captions.txt"), os.path.join(ds, "captions.txt"))
    r = c.post("/v1/train", dict(RUN, real_data="links/data", out="links/d-run", steps=4))
    refused(poll(c, r.json()["id"], final) if r.status == 202 else None,
            "a dataset whose captions.txt links outside")


def check_samples(t, c, root, tmp):
    """GET /v1/train/{id}/samples/{i} serves a run's sample grids, beneath data_root with no
    link followed; GET /v1/models gives the size multiple the page's inputs step by."""
    r = c.post("/v1/train", dict(RUN, out="runs/samples", steps=2, sample_every=1, checkpoint_every=0))
    if not t.ok(r.status == 202, "a short run with samples", r):
        return
    j = poll(c, r.json()["id"], final)
    sm = (j or {}).get("samples") or []
    t.ok(j and j["status"] == "succeeded" and len(sm) == 2, "its two sample grids are listed", j)
    s0 = c.get(f"/v1/train/{j['id']}/samples/0")
    t.ok(s0.status == 200 and s0.body[:8] == b"\x89PNG\r\n\x1a\n", "GET .../samples/0 is the PNG", s0)
    t.eq(c.get(f"/v1/train/{j['id']}/samples/7").status, 404, "a sample that does not exist is 404")
    odd = ["+0", "00", "-0", "0x0", "0.0", "1e0", "99999999999999999999", "9223372036854775807"]
    codes = [c.get(f"/v1/train/{j['id']}/samples/{i}").status for i in odd]
    t.ok(codes == [404] * len(odd), "only canonical decimal names a sample: +0, 00, 0x0, a huge index "
         "(not clamped) are 404", list(zip(odd, codes)))
    t.eq(c.get(f"/v1/train/{j['id']}/samples/%30").status, 400, "'0' percent-encoded (%30) is 400")
    outside = os.path.join(tmp, "outside-sample.png")
    with open(outside, "wb") as f:
        f.write(s0.body)
    first = os.path.join(root, sm[0])
    os.unlink(first)
    os.symlink(outside, first)
    t.eq(c.get(f"/v1/train/{j['id']}/samples/0").status, 404, "a sample replaced by a link out is not followed")
    os.unlink(first)
    os.link(outside, first)
    t.eq(c.get(f"/v1/train/{j['id']}/samples/0").status, 404,
         "a sample replaced by a hard link to a file outside is refused too (st_nlink > 1)")
    second = os.path.join(root, sm[1])
    os.unlink(second)
    os.mkfifo(second)
    codes = [c.get(f"/v1/train/{j['id']}/samples/1", timeout=30).status for _ in range(3)]
    t.ok(codes == [404] * 3 and c.get("/healthz").status == 200,
         "a sample replaced by a FIFO is 404 at once, and the daemon keeps serving", codes)
    m = c.get("/v1/models").json()["data"][0]
    t.ok(m.get("size_multiple", 0) >= 1 and m.get("default_width", 0) % m["size_multiple"] == 0,
         "GET /v1/models gives the size multiple and the default size", m)


def sse_reader(c, path, box):
    try:
        box["result"] = c.sse(path, timeout=120 * SCALE)
    except Exception as e:  # noqa: BLE001
        box["result"] = (None, repr(e))


def check_run_cancel_resume(t, c, root):
    r = c.post("/v1/train", dict(RUN, out="runs/a", steps=LONG))
    t.ok(r.status == 202 and r.json()["status"] == "queued" and r.json()["id"].startswith("train_"),
         "POST /v1/train is 202 queued with an id", r)
    if r.status != 202:
        return None
    jid = r.json()["id"]
    box = {}
    th = threading.Thread(target=sse_reader, args=(c, f"/v1/train/{jid}/events", box))
    th.start()
    j1 = poll(c, jid, lambda j: j["step"] >= 2 and j["status"] == "running")
    t.ok(j1 and j1["status"] == "running" and j1["kind"] == "train", "the run starts", j1)
    j2 = poll(c, jid, lambda j: j["step"] >= j1["step"] + 3 and finite_losses(j)) if j1 else None
    t.ok(j2 and j2["step"] > j1["step"] and finite_losses(j2),
         "step advances, losses and gradient norms are finite", j2)
    t.ok(j2 and j2["total_steps"] == LONG and j2["generator_steps"] >= 1 and j2["it_per_s"] > 0
         and j2["eta_s"] > 0, "total_steps, generator_steps, it/s and ETA are reported", j2)
    j3 = poll(c, jid, lambda j: j["samples"] and j["checkpoints"])
    t.ok(j3 and all(os.path.isfile(os.path.join(root, s)) for s in j3["samples"]) and
         all(os.path.isdir(os.path.join(root, k["path"])) for k in j3["checkpoints"]),
         "sample and checkpoint paths are relative to data_root and exist", j3)
    r = c.get(f"/v1/jobs/{jid}")
    t.ok(r.status == 200 and r.json()["kind"] == "train" and r.json()["request"]["out"] == "runs/a",
         "the run is also a job (kind train) with its effective request", r)

    # Generation goes first: requests made now complete while the run keeps running.
    results = []

    def gen(i):
        results.append(c.post("/v1/generate", {"prompt": f"a red circle {i}", "seed": i,
                                               "response_format": "png"}))
    gens = [threading.Thread(target=gen, args=(i,)) for i in range(3)]
    for g in gens:
        g.start()
    for g in gens:
        g.join()
    after = c.get(f"/v1/train/{jid}").json()
    t.ok(len(results) == 3 and all(x.status == 200 and x.body[:8] == b"\x89PNG\r\n\x1a\n" for x in results),
         "generations made during training complete", results)
    t.ok(after["status"] == "running", "... while the training job is still running", after["status"])
    r = c.post("/v1/generate", {"prompt": "a blue square", "seed": 5, "response_format": "png"})
    after2 = poll(c, jid, lambda j: j["step"] > after["step"])
    t.ok(r.status == 200 and after2 and after2["status"] == "running" and after2["step"] > after["step"],
         "training goes on between generations", (r, after2 and after2["step"], after["step"]))

    # A second run queues behind the first; the same run directory twice is a conflict.
    r = c.post("/v1/train", dict(RUN, out="runs/q", steps=3, sample_every=0, checkpoint_every=0))
    qid = r.json().get("id") if r.status == 202 else None
    t.ok(r.status == 202 and r.json()["queue_position"] == 1, "a second training job queues", r)
    if qid:
        t.eq(c.get(f"/v1/train/{qid}").json()["status"], "queued", "... and waits while the first runs")
    r = c.post("/v1/train", dict(RUN, resume="runs/a", steps=LONG))
    t.ok(r.status == 409 and r.error().get("field") == "out", "resuming a run that is running is 409", r)
    r = c.post("/v1/train", dict(RUN, out="runs/a", steps=LONG))
    t.ok(r.status == 400 and r.error().get("field") == "out",
         "a fresh run into a directory holding a run is 400", r)
    r = c.get("/metrics")
    m = r.body.decode()
    t.ok("sdxld_train_running 1" in m and "sdxld_train_step " in m and 'sdxld_train_loss{loss="dm"}' in m,
         "/metrics reports the training step and losses", m[-800:])

    # DELETE: a final checkpoint, then cancelled.
    r = c.delete(f"/v1/train/{jid}")
    body = r.json() if r.status == 200 else {}
    stop_step = body.get("step", -1)
    ck = body.get("checkpoints") or [{}]
    t.ok(r.status == 200 and body.get("status") == "cancelled", "DELETE /v1/train/{id} ends the job cancelled", r)
    t.ok(ck[-1].get("step") == stop_step and stop_step > 0 and
         os.path.isfile(os.path.join(root, ck[-1].get("path", "?"), "weights.safetensors")),
         "... with its final checkpoint (at the step it stopped) listed and on disk", body)
    with open(os.path.join(root, "runs", "a", "latest")) as f:
        t.eq(f.read().strip(), os.path.basename(ck[-1].get("path", "?")), "... and named by the run's 'latest'")
    t.eq(c.delete(f"/v1/train/{jid}").status, 409, "a second DELETE is 409")
    th.join(60 * SCALE)
    status, events = box.get("result", (None, []))
    ev = [json.loads(e["data"]) for e in events if "data" in e] if status == 200 else []
    seqs = [int(e["id"]) for e in events if "id" in e] if status == 200 else []
    steps = [e["step"] for e in ev]
    t.ok(status == 200 and len(ev) >= 5 and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
         and steps == sorted(steps) and ev[-1]["status"] == "cancelled",
         "SSE events arrive in order, step by step, ending with the cancelled state",
         (status, seqs[:10], steps[:20], ev[-1]["status"] if ev else None))
    t.ok(any(finite_losses(e) for e in ev) and all("checkpoints" in e and "losses" in e for e in ev),
         "events carry the training object (losses, checkpoints)", ev[-1] if ev else None)

    if qid:
        jq = poll(c, qid, final)
        t.ok(jq and jq["status"] == "succeeded" and jq["step"] == 3, "the queued run starts and succeeds", jq)

    # Resume from the final checkpoint.
    r = c.post("/v1/train", dict(RUN, resume="runs/a", steps=stop_step + 6))
    t.eq(r.status, 202, "POST /v1/train with resume is 202")
    if r.status != 202:
        return None
    rid = r.json()["id"]
    jr = poll(c, rid, final)
    t.ok(jr and jr["status"] == "succeeded" and jr["resumed_from_step"] == stop_step and
         jr["step"] == stop_step + 6 and finite_losses(jr),
         "the resumed run continues from that step and succeeds", jr)
    t.ok(jr and jr["checkpoints"] and jr["checkpoints"][-1]["step"] == stop_step + 6 and
         all(k["step"] > stop_step for k in jr["checkpoints"]) and
         jr["result"] and jr["result"]["generator"] == "runs/a/generator.safetensors",
         "its checkpoints come after the resumed step; the result names the generator", jr)
    h = (jr or {}).get("history") or {}
    st = h.get("step", [])
    t.ok(st and st == sorted(set(st)) and st[-1] == jr["step"] and len(st) <= 512 and
         all(len(h[k]) == len(st) and all(x is None or math.isfinite(x) for x in h[k])
             for k in ("dm", "gan_g", "fake", "gan_d")),
         f"GET /v1/train/{{id}} carries the loss history for plots ({len(st)} points, steps ascending)", h)
    page = c.get("/")
    t.ok(page.status == 200 and b"Training runs" in page.body and b"/v1/train/" in page.body and b"history" in page.body,
         "the web page lists training runs with loss curves from that history", page)
    return jr


def check_load(t, c, root):
    base = c.post("/v1/generate", {"prompt": "a red circle", "seed": 7, "response_format": "png"})
    r = c.post("/v1/models/load", {"generator": "runs/a/generator.safetensors"})
    t.ok(r.status == 200 and r.json().get("generator") == "runs/a/generator.safetensors",
         "POST /v1/models/load serves the distilled generator", r)
    r = c.get("/v1/models")
    m = r.json()["data"][0] if r.status == 200 and r.json().get("data") else {}
    t.ok(m.get("generator") == "runs/a/generator.safetensors" and m.get("path", "").endswith("teacher"),
         "GET /v1/models shows the model folder and the generator", r)
    g = c.post("/v1/generate", {"prompt": "a red circle", "seed": 7, "response_format": "png"})
    t.ok(g.status == 200 and g.body[:8] == b"\x89PNG\r\n\x1a\n", "the distilled generator generates a PNG", g)
    t.ok(base.status == 200 and g.body != base.body, "... different from the teacher's image for the same seed")
    r = c.post("/v1/models/load", {"generator": "teacher/text_encoder/model.safetensors"})
    t.ok(r.status == 400 and r.error().get("field") == "generator", "loading a file that is not a UNet is 400", r)
    r = c.get("/v1/models")
    t.ok(r.status == 200 and r.json()["data"][0].get("generator") == "runs/a/generator.safetensors",
         "... and the previous generator keeps serving", r)
    t.eq(c.post("/v1/generate", {"prompt": "a red circle", "seed": 7, "response_format": "png"}).body, g.body,
         "... with the same pixels")


def st_rewrite(src, dst, value):
    """A copy of a safetensors file with every float element set to value (struct format
    per dtype: F32 'f', F16 'e'), the header unchanged."""
    import struct
    with open(src, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = f.read(n)
        data = bytearray(f.read())
    for k, v in json.loads(hdr).items():
        if k == "__metadata__" or v["dtype"] not in ("F32", "F16"):
            continue
        fmt, size = ("<f", 4) if v["dtype"] == "F32" else ("<e", 2)
        b, e = v["data_offsets"]
        data[b:e] = struct.pack(fmt, value) * ((e - b) // size)
    with open(dst, "wb") as f:
        f.write(n.to_bytes(8, "little") + hdr + bytes(data))


def check_nonfinite(t, c, root):
    """Weights with NaN/Inf are refused at load (the previous generator keeps serving);
    finite weights that overflow in the computation fail the generation, never a black
    image."""
    src = os.path.join(root, "teacher", "unet", "diffusion_pytorch_model.safetensors")
    st_rewrite(src, os.path.join(root, "nan.safetensors"), float("nan"))
    st_rewrite(src, os.path.join(root, "inf.safetensors"), float("inf"))
    st_rewrite(src, os.path.join(root, "huge.safetensors"), 60000.0)
    before = c.get("/v1/models").json()["data"][0].get("generator")
    for name in ("nan", "inf"):
        r = c.post("/v1/models/load", {"generator": f"{name}.safetensors"})
        e = r.error()
        t.ok(r.status == 400 and e.get("field") == "generator" and "non-finite" in e.get("message", "")
             and "tensor '" in e.get("message", ""), f"a generator full of {name} is refused naming a tensor", r)
    t.eq(c.get("/v1/models").json()["data"][0].get("generator"), before, "... and the previous one keeps serving")
    r = c.post("/v1/models/load", {"generator": "huge.safetensors"})
    t.eq(r.status, 200, "a generator with huge finite weights loads")
    g = c.post("/v1/generate", {"prompt": "a red circle", "seed": 7, "response_format": "png"})
    t.ok(g.status == 500 and "non-finite" in g.error().get("message", ""),
         "... and its overflowing generation fails with a clear error, not a black image", g)
    r = c.post("/v1/models/load", {"generator": "teacher/unet/diffusion_pytorch_model.safetensors"})
    t.eq(r.status, 200, "back to the teacher's UNet")


def st_keys(path):
    """The tensor names of a safetensors file (its JSON header)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return [k for k in json.loads(f.read(n)) if k != "__metadata__"]


def check_lora(t, c, root):
    """A LoRA run: only adapters train; the adapter file serves through /v1/models/load."""
    r = c.post("/v1/models/load", {"generator": "teacher/unet/diffusion_pytorch_model.safetensors"})
    t.eq(r.status, 200, "back to the teacher's UNet")
    base = c.post("/v1/generate", {"prompt": "a red circle", "seed": 3, "response_format": "png"}).body
    r = c.post("/v1/train", dict(RUN, out="runs/lora", steps=6, lora_rank=2, lora_alpha=4, lr_generator=5e-3))
    t.eq(r.status, 202, "POST /v1/train with lora_rank 2 is 202")
    if r.status != 202:
        return
    j = poll(c, r.json()["id"], final)
    t.ok(j and j["status"] == "succeeded" and j["generator_steps"] == 3 and finite_losses(j),
         "the LoRA run succeeds with finite losses (3 generator updates)", j)
    req = c.get(f"/v1/jobs/{j['id']}").json().get("request", {}) if j else {}
    t.ok(req.get("lora_rank") == 2 and req.get("lora_alpha") == 4, "the effective request shows the LoRA settings", req)
    lp = os.path.join(root, "runs/lora/generator_lora.safetensors")
    keys = st_keys(lp) if os.path.exists(lp) else []
    downs = [k for k in keys if k.endswith(".lora_down.weight")]
    t.ok(downs and all(k.startswith("lora_unet_") for k in keys) and
         len([k for k in keys if k.endswith(".alpha")]) == len(downs) == len(keys) // 3,
         f"generator_lora.safetensors holds kohya-style adapters ({len(downs)} modules)", keys[:3])
    ck = [k for k in st_keys(os.path.join(root, "runs/lora/checkpoint-0000006/weights.safetensors"))
          if k.startswith("generator")] if os.path.isdir(os.path.join(root, "runs/lora/checkpoint-0000006")) else []
    t.ok(ck and all(k.startswith("generator_lora.lora_unet_") for k in ck),
         "the checkpoint keeps only the generator's adapters, not its whole UNet", ck[:2])
    r = c.post("/v1/models/load", {"lora": "runs/lora/generator_lora.safetensors"})
    t.ok(r.status == 200 and "LoRA runs/lora/generator_lora.safetensors" in r.json().get("generator", ""),
         "POST /v1/models/load merges the adapters into the served UNet", r)
    g = c.post("/v1/generate", {"prompt": "a red circle", "seed": 3, "response_format": "png"})
    t.ok(g.status == 200 and g.body[:8] == b"\x89PNG\r\n\x1a\n" and g.body != base,
         "the adapted generator generates, differently from the teacher", g)
    r = c.post("/v1/models/load", {"lora": "runs/lora/generator.safetensors"})
    t.ok(r.status == 400 and "unexpected key" in r.error().get("message", ""),
         "a UNet file given as lora is 400 naming the key", r)
    t.eq(r.error().get("field"), "lora", "... and the field at fault is lora, not generator")
    r = c.post("/v1/models/load", {"generator": "runs/lora/generator.safetensors", "lora_scale": 0.5})
    t.ok(r.status == 400 and r.error().get("field") == "lora_scale", "lora_scale without lora is 400", r)
    t.eq(c.post("/v1/generate", {"prompt": "a red circle", "seed": 3, "response_format": "png"}).body, g.body,
         "after the refusals the adapted generator still serves, same pixels")


def check_sigterm(t, d, root):
    c = d.client
    r = c.post("/v1/train", dict(RUN, out="runs/s", steps=LONG, checkpoint_every=0, sample_every=0))
    if not t.ok(r.status == 202, "a run to interrupt starts", r):
        return
    poll(c, r.json()["id"], lambda j: j["step"] >= 2)
    d.signal(signal.SIGTERM)
    try:
        rc = d.wait(60 * SCALE)
    except subprocess.TimeoutExpired:
        rc = None
    t.eq(rc, 0, "SIGTERM during training: the daemon exits 0")
    latest = os.path.join(root, "runs", "s", "latest")
    ok = os.path.isfile(latest)
    if ok:
        with open(latest) as f:
            ok = os.path.isfile(os.path.join(root, "runs", "s", f.read().strip(), "weights.safetensors"))
    t.ok(ok, "... after writing a final checkpoint", d.log_text()[-1500:])


def check_slow_passes(t, tmp, root, teacher):
    """Serving first, for real: with every training pass made slow (a debug option), a
    generation waits behind at most one UNet pass (counted by the daemon, not timed); a
    DELETE and a SIGTERM mid-iteration end the run with a checkpoint; a second SIGTERM
    exits at once."""
    with Daemon("--data_root", root, "--debug_train_pass_sleep_ms", "150", model=teacher, tmp=tmp) as d:
        c = d.client
        r = c.post("/v1/train", dict(RUN, out="runs/slow", steps=LONG, checkpoint_every=0, sample_every=0))
        if not t.ok(r.status == 202, "a run with slow passes starts", r):
            return
        jid = r.json()["id"]
        poll(c, jid, lambda j: j["step"] >= 1, timeout=120)
        waited = []
        for i in range(4):
            g = c.post("/v1/generate", {"prompt": f"between passes {i}", "async": True})
            if g.status != 202:
                waited.append(("submit", g.status))
                continue
            j = c.wait_job(g.json()["id"], timeout=120)
            waited.append(((j.get("result") or {}).get("training_passes_waited"), j["status"]))
        t.ok(all(s == "succeeded" and isinstance(w, int) and 0 <= w <= 1 for w, s in waited),
             "generations during a run wait behind at most one training pass", waited)
        tr = c.get(f"/v1/train/{jid}").json()
        t.ok(tr["status"] == "running", "... while the run keeps going", tr.get("status"))
        r = c.delete(f"/v1/train/{jid}")
        j = poll(c, jid, final, timeout=120)
        ck = (j or {}).get("checkpoints") or []
        t.ok(r.status == 200 and j and j["status"] == "cancelled" and ck and
             os.path.isfile(os.path.join(root, ck[-1].get("path", "?"), "weights.safetensors")),
             "DELETE mid-iteration: cancelled with a final checkpoint", j)
        r = c.post("/v1/train", dict(RUN, out="runs/slow2", steps=LONG, checkpoint_every=0, sample_every=0))
        if not t.ok(r.status == 202, "a second slow run starts", r):
            return
        poll(c, r.json()["id"], lambda j: j["step"] >= 1, timeout=120)
        d.signal(signal.SIGTERM)
        try:
            rc = d.wait(120 * SCALE)
        except subprocess.TimeoutExpired:
            rc = None
        latest = os.path.join(root, "runs", "slow2", "latest")
        t.ok(rc == 0 and os.path.isfile(latest), "SIGTERM mid-iteration: exit 0 after a final checkpoint",
             (rc, d.log_text()[-800:]))
    with Daemon("--data_root", root, "--debug_train_pass_sleep_ms", "2000", model=teacher, tmp=tmp) as d:
        c = d.client
        r = c.post("/v1/train", dict(RUN, out="runs/slow3", steps=LONG, checkpoint_every=0, sample_every=0))
        t.ok(r.status == 202, "a very slow run starts", r)
        poll(c, r.json()["id"], lambda j: j["status"] == "running", timeout=120)
        d.signal(signal.SIGTERM)
        time.sleep(0.2)
        d.signal(signal.SIGTERM)
        try:
            rc = d.wait(120 * SCALE)
        except subprocess.TimeoutExpired:
            rc = None
        t.ok(rc is not None, "a second SIGTERM exits without waiting for the iteration", rc)


def check_auth(t, tmp, root, teacher):
    api, adm = os.path.join(tmp, "api.tokens"), os.path.join(tmp, "admin.tokens")
    with open(api, "w") as f:
        f.write("api-token-0123456789abcdef\n")
    with open(adm, "w") as f:
        f.write("admin-token-0123456789abcdef\n")
    user, admin = "api-token-0123456789abcdef", "admin-token-0123456789abcdef"
    with Daemon("--data_root", root, "--api_token_file", api, "--admin_token_file", adm,
                model=teacher, tmp=tmp) as d:
        c = d.client
        body = dict(RUN, out="runs/auth", steps=LONG)
        t.eq(c.request("POST", "/v1/train", body, token=user).status, 401,
             "auth on: an api token cannot start training")
        t.eq(c.request("POST", "/v1/models/load", {"generator": "x"}, token=user).status, 401,
             "auth on: an api token cannot load a generator")
        r = c.request("POST", "/v1/train", body, token=admin)
        t.eq(r.status, 202, "auth on: an admin token starts training")
        if r.status == 202:
            jid = r.json()["id"]
            t.eq(c.request("GET", f"/v1/train/{jid}", token=user).status, 200,
                 "auth on: an api token may watch a training job")
            t.eq(c.request("DELETE", f"/v1/jobs/{jid}", token=user).status, 401,
                 "auth on: an api token cannot stop training through /v1/jobs either")
            r = c.request("DELETE", f"/v1/jobs/{jid}", token=admin)
            t.ok(r.status == 200 and r.json()["status"] == "cancelled",
                 "auth on: an admin token stops it (DELETE /v1/jobs/{id} works for training too)", r)
        t.eq(d.stop(), 0, "auth daemon exits 0")


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-train-test-")
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    teacher = make_teacher(root)
    t0 = time.time()
    with Daemon("--data_root", root, "--max_batch", "2", "--batch_window_ms", "5", model=teacher, tmp=tmp) as d:
        c = d.client
        check_bad_requests(t, c, root, tmp)
        check_links(t, c, d, root, tmp)
        check_samples(t, c, root, tmp)
        if check_run_cancel_resume(t, c, root):
            check_load(t, c, root)
        check_lora(t, c, root)
        check_nonfinite(t, c, root)
        t.ok(c.get("/healthz").status == 200, "the daemon is healthy after all that")
        check_sigterm(t, d, root)
    check_slow_passes(t, tmp, root, teacher)
    check_auth(t, tmp, root, teacher)
    t.diag(f"training tests took {time.time() - t0:.1f} s")
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        t.diag(f"daemon logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

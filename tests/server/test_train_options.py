#!/usr/bin/env python3
"""test_train_options.py — the training option table through the daemon (POST /v1/train),
as a client over real HTTP on loopback.  TAP output.

On the micro teacher (16x16 native):
  - resume keeps every option: a LoRA run at a non-default resolution with non-default
    options is stopped and resumed with only {resume, steps}; GET's effective request and
    the checkpoint's state.json config equal the first run's (steps aside);
  - a non-resume-safe change at resume is a 400 naming the field, a resume-safe one is not;
  - admission: the smallest body is accepted with its estimate (202 and GET); with
    train_memory_mb set low the same body is a 400 whose message carries the estimate;
  - retention: checkpoint_every 1 + keep_checkpoints 2 leaves exactly the newest two;
  - docs/daemon.md's field table is what `sdxld train dmd2 --print-api-table` prints.
On the built-in model: the smallest body takes the shipped teacher's DMD2 recipe.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, DATA, SCALE, Daemon, run_main  # noqa: E402
from test_train import final, make_teacher, poll  # noqa: E402

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIRST = {"real_data": "shapes", "resolution": 32, "batch": 3, "ttur": 3, "lora_rank": 2, "lora_alpha": 4,
         "lr_generator": 2e-4, "lr_fake": 1e-4, "warmup": 0, "guidance": 5, "gan_weight_g": 0.01,
         "timesteps": [999, 499], "cache_size": 12, "seed": 7, "checkpoint_every": 0, "sample_every": 0,
         "keep_checkpoints": 5}


def same(got, want):
    """Equal, floats as fp32 (the trainer's precision: 2e-4 comes back as 0.000199999995)."""
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-6)
    return got == want


def state_config(root, run):
    with open(os.path.join(root, run, "latest")) as f:
        ck = f.read().strip()
    with open(os.path.join(root, run, ck, "state.json")) as f:
        return ck, json.load(f)["config"]


def check_resume_keeps_options(t, c, root):
    r = c.post("/v1/train", dict(FIRST, out="runs/opts", steps=1000000))
    if not t.ok(r.status == 202, "a LoRA run at resolution 32 with non-default options starts", r):
        return
    jid = r.json()["id"]
    j = poll(c, jid, lambda j: j["step"] >= 2)
    req1 = c.get(f"/v1/train/{jid}").json().get("request") or {}
    t.ok(all(same(req1.get(k), v) for k, v in FIRST.items()), "GET's request shows every option given", req1)
    r = c.delete(f"/v1/train/{jid}")
    stop = r.json().get("step", -1) if r.status == 200 else -1
    t.ok(r.status == 200 and stop >= 2, "stopped with a final checkpoint", r)
    ck, cfg1 = state_config(root, "runs/opts")
    t.ok(all(same(cfg1.get(k), v) for k, v in FIRST.items()) and cfg1.get("out") == "runs/opts"
         and cfg1.get("teacher") == req1.get("teacher") and cfg1 == req1,
         f"{ck}/state.json stores the full effective configuration", cfg1)

    r = c.post("/v1/train", {"resume": "runs/opts", "steps": 1000000, "lora_rank": 4})
    t.ok(r.status == 400 and r.error().get("field") == "lora_rank" and "resume" in r.error().get("message", ""),
         "changing lora_rank at resume is a 400 naming lora_rank", r)
    r = c.post("/v1/train", {"resume": "runs/opts", "steps": 1000000, "resolution": 16})
    t.ok(r.status == 400 and r.error().get("field") == "resolution", "... and resolution a 400 naming it", r)
    r = c.post("/v1/train", {"resume": "runs/opts", "steps": stop + 2, "resolution": 32, "log_every": 2})
    rid = r.json().get("id") if r.status == 202 else None
    t.ok(rid is not None, "repeating a stored value and changing log_every (resume-safe) is accepted", r)
    if rid:
        poll(c, rid, final)

    r = c.post("/v1/train", {"resume": "runs/opts", "steps": stop + 4})
    if not t.ok(r.status == 202, "resume with only {resume, steps} is 202", r):
        return
    rid = r.json()["id"]
    jr = poll(c, rid, final)
    t.ok(jr and jr["status"] == "succeeded" and jr["step"] == stop + 4, "the resumed run succeeds", jr)
    req2 = c.get(f"/v1/train/{rid}").json().get("request") or {}
    want = dict(req1, steps=stop + 4, resume=True, log_every=2)
    t.ok(req2 == want, "GET's effective request is the first run's (steps, resume, log_every aside)",
         {k: (req1.get(k), req2.get(k)) for k in set(req1) | set(req2) if req1.get(k) != req2.get(k)})
    ck2, cfg2 = state_config(root, "runs/opts")
    t.ok(cfg2 == dict(cfg1, steps=stop + 4, log_every=2, resume=True),
         f"{ck2}/state.json keeps every option (LoRA rank, resolution, ...)",
         {k: (cfg1.get(k), cfg2.get(k)) for k in set(cfg1) | set(cfg2) if cfg1.get(k) != cfg2.get(k)})


def check_admission(t, c, tmp, root, teacher):
    body = {"out": "runs/min", "steps": 1, "cache_size": 4, "checkpoint_every": 0, "sample_every": 0}
    r = c.post("/v1/train", body)
    est = r.json().get("estimate") if r.status == 202 else None
    t.ok(r.status == 202 and est and isinstance(est["memory_bytes"], int) and est["memory_bytes"] > 0 and est["iteration_s"] > 0,
         "the smallest body is accepted with its estimate (memory_bytes, iteration_s)", r)
    if r.status == 202:
        j = c.get(f"/v1/train/{r.json()['id']}").json()
        t.eq(j.get("estimate"), est, "GET /v1/train/{id} reports the same estimate")
        t.eq(j.get("request", {}).get("resolution"), 16, "resolution defaults to the teacher's native size (16)")
        poll(c, r.json()["id"], final)
    with Daemon("--data_root", root, "--train_memory_mb", "1", model=teacher, tmp=tmp) as d:
        r = d.client.post("/v1/train", dict(body, out="runs/min2"))
        m = r.error().get("message", "")
        t.ok(r.status == 400 and "estimate" in m and "GiB" in m and "train_memory_mb" in m,
             "with train_memory_mb 1 the same body is a 400 that gives the estimate", r)
        d.stop()
    with Daemon("--data_root", root, "--train_max_iteration_s", "1", "--train_memory_mb", "1000000000",
                model=teacher, tmp=tmp) as d:
        r = d.client.post("/v1/train", dict(body, out="runs/min3", batch=256, resolution=128))
        m = r.error().get("message", "")
        t.ok(r.status == 400 and "train_max_iteration_s" in m,
             "an iteration estimated over train_max_iteration_s is a 400 saying so", r)
        d.stop()


def check_retention(t, c, root):
    r = c.post("/v1/train", dict(FIRST, out="runs/keep", steps=5, checkpoint_every=1, keep_checkpoints=2,
                                 lora_rank=0))
    j = poll(c, r.json()["id"], final) if r.status == 202 else None
    t.ok(j and j["status"] == "succeeded", "a run with checkpoint_every 1, keep_checkpoints 2 succeeds", j)
    left = sorted(n for n in os.listdir(os.path.join(root, "runs/keep")) if n.startswith("checkpoint-"))
    t.eq(left, ["checkpoint-0000004", "checkpoint-0000005"], "... and leaves exactly the newest two checkpoints")


def check_builtin_recipe(t, tmp, root):
    """The built-in model carries its teacher and DMD2 recipe: the smallest body takes them."""
    builtin = os.path.join(TOP, "models", "shapes-small")
    with Daemon("--data_root", root, model=builtin, tmp=tmp) as d:
        r = d.client.post("/v1/train", {"out": "runs/builtin", "steps": 1, "cache_size": 4, "checkpoint_every": 0,
                                        "sample_every": 0})
        t.ok(r.status == 202, "the smallest body on the built-in model is accepted", r)
        if r.status == 202:
            j = poll(d.client, r.json()["id"], final)
            q = j.get("request", {})
            want = {"batch": 4, "ttur": 5, "lr_generator": 5e-5, "lr_fake": 5e-5, "warmup": 20, "guidance": 4.0,
                    "seed": 7, "steps": 1, "cache_size": 4}
            t.ok(all(same(q.get(k), v) for k, v in want.items()),
                 "... with the model's own DMD2 recipe (teacher/dmd2_defaults.json) where the body is silent", q)
            t.ok(j.get("status") == "succeeded", "... and the run trains from the shipped teacher", j.get("error"))
        t.eq(d.stop(), 0, "daemon exits 0")


def check_docs(t):
    p = subprocess.run([BIN, "train", "dmd2", "--print-api-table"], capture_output=True, text=True, timeout=30)
    with open(os.path.join(TOP, "docs", "daemon.md")) as f:
        doc = f.read()
    m = re.search(r"<!-- train-options:begin[^\n]*-->\n(.*?)<!-- train-options:end -->", doc, re.S)
    t.ok(p.returncode == 0 and m and m.group(1) == p.stdout,
         "docs/daemon.md's /v1/train field table is the option table (regenerate: sdxld train dmd2 --print-api-table)",
         p.stdout[:300] if not m else None)


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-train-opts-")
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    teacher = make_teacher(root)
    t0 = time.time()
    check_docs(t)
    with Daemon("--data_root", root, "--max_batch", "2", model=teacher, tmp=tmp) as d:
        c = d.client
        check_resume_keeps_options(t, c, root)
        check_retention(t, c, root)
        check_admission(t, c, tmp, root, teacher)
        t.eq(d.stop(), 0, "daemon exits 0")
    check_builtin_recipe(t, tmp, root)
    t.diag(f"option tests took {time.time() - t0:.1f} s (scale {SCALE})")
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        t.diag(f"daemon logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

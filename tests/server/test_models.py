#!/usr/bin/env python3
"""test_models.py — models by name (docs/api.md, Models): models_dir's catalog, switching
the whole model, generations naming a model, and queued work across switches.
Python standard library only.  TAP output.

The models folder is models_fixture.py's (tiny-a, tiny-b, a single-file tiny, a UNet, a
LoRA, a model that does not load, and hostile entries).  Daemons started here:
  1. tiny-a served, models_dir, model_config for the single file, max_batch 4: the listing,
     reference images per model, refusals, switching, queued jobs across a switch, a failed
     load, A1111's sd-models / options / override_settings, and a short switching load run;
  2. the same with a model_memory_mb holding one tiny model but not two (so a switch frees
     the old model first; the single f32 file not at all): free-first switches, a refusal,
     and a failed free-first load that reloads the old model.
Images are compared by their inflated pixel data (the encoder is deterministic).
"""
import base64
import json
import os
import shutil
import sys
import tempfile
import threading
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MODEL, Daemon, png_text, run_main  # noqa: E402
from models_fixture import KINDS, WHOLE, make_models, tree_bytes  # noqa: E402
from models_load import load_run  # noqa: E402

SIZE = 64


def pixels(png):
    idat, i = b"", 8
    while png and i + 8 <= len(png):
        n = int.from_bytes(png[i:i + 4], "big")
        if png[i + 4:i + 8] == b"IDAT":
            idat += png[i + 8:i + 8 + n]
        i += 12 + n
    return zlib.decompress(idat) if idat else None


def gen(c, seed, model=None, **kw):
    body = {"prompt": "a red cube", "seed": seed, "width": SIZE, "height": SIZE, "response_format": "png"}
    if model is not None:
        body["model"] = model
    body.update(kw)
    return c.post("/v1/generate", body)


def model_of(png):
    text = png_text(png, "parameters") or ""
    for part in text.split(", "):
        if part.startswith("Model: "):
            return part[len("Model: "):]
    return None


def listing(c):
    r = c.get("/v1/models")
    return r, {m["name"]: m for m in r.json()["data"][1:]} if r.status == 200 else {}


def check_listing(t, c, md):
    r, by = listing(c)
    t.ok(r.status == 200 and r.json()["data"][0]["kind"] == "served" and r.json()["data"][0]["name"] == "tiny-a",
         "GET /v1/models: the served model first, as before models_dir", r)
    want = dict(KINDS)
    if os.geteuid() != 0:
        want["unreadable.safetensors"] = "error"
    t.eq({n: m["kind"] for n, m in by.items()}, want, "every entry classified by content (hidden files skipped)")
    sizes_ok = all(by[n]["size_bytes"] == (tree_bytes(os.path.join(md, n)) if KINDS[n] == "diffusers" else
                                           os.path.getsize(os.path.join(md, n)))
                   for n in ("tiny-a", "tiny-b", "broken", "tiny.safetensors", "gen.safetensors",
                             "loras/style.safetensors", "corrupt.safetensors", "truncated.safetensors"))
    t.ok(sizes_ok, "size_bytes: the file, or a folder's files summed", {n: by[n].get("size_bytes") for n in by})
    served = r.json()["data"][0]["param_bytes"]
    est = by["tiny-a"].get("resident_bytes", 0)
    t.ok(abs(est - served) <= served // 100, f"resident_bytes estimate {est} within 1% of the loaded {served}")
    t.ok(by["tiny-a"]["loaded"] and not by["tiny-b"]["loaded"], "loaded marks the served model only")
    t.ok(all("error" in by[n] and "symbolic link" in by[n]["error"] for n in ("escape.safetensors", "alias")),
         "symbolic links (out of the folder or inside) are errors, never followed",
         {n: by[n] for n in ("escape.safetensors", "alias")})
    t.ok("header" in by["corrupt.safetensors"].get("error", "") and
         not any(md in m.get("error", "") for m in by.values()),
         "a corrupt file is an error with the reader's message, paths relative to models_dir",
         by["corrupt.safetensors"])
    t.ok("regular file" in by["pipe.safetensors"].get("error", ""), "a FIFO is an error (and did not hang)",
         by["pipe.safetensors"])
    t.eq(r.json().get("default"), "tiny-a", "the default model is the startup one")


def references(c):
    """seed -> model -> pixels, each generated alone with the model named."""
    refs = {}
    for seed in (11, 12):
        for name in ("tiny-a", "tiny-b", "tiny.safetensors"):
            r = gen(c, seed, name)
            refs.setdefault(seed, {})[name] = pixels(r.body) if r.status == 200 else None
    return refs


def check_named(t, c, refs):
    t.ok(all(refs[s][m] for s in refs for m in refs[s]), "a generation may name any whole model", refs.keys())
    t.ok(refs[11]["tiny-a"] != refs[11]["tiny-b"], "tiny-b's pixels differ from tiny-a's")
    t.ok(refs[11]["tiny-a"] == refs[11]["tiny.safetensors"],
         "the single-file checkpoint (f32) makes tiny-a's pixels (f16 weights widen exactly)")
    r = gen(c, 11)
    t.ok(r.status == 200 and pixels(r.body) == refs[11]["tiny-a"] and model_of(r.body) == "tiny-a",
         "a request naming no model runs on the default", (r.status, model_of(r.body)))
    r = gen(c, 11, "tiny-b")
    t.eq(model_of(r.body), "tiny-b", "the PNG parameters name the model that made it")
    for name, code, what in (("nope", 400, "no model"), ("gen.safetensors", 400, "UNet-only"),
                             ("loras/style.safetensors", 400, "LoRA"), ("escape.safetensors", 400, "symbolic link"),
                             ("../models/tiny-a", 400, "no model"), (7, 400, "expected a model name")):
        r = gen(c, 1, name)
        e = r.error()
        t.ok(r.status == code and e.get("field") == "model" and what in e.get("message", ""),
             f"/v1/generate model {name!r}: {code} naming the field ({what})", r)


def check_load_errors(t, c):
    for body, code, what in (({"model": "nope"}, 404, "no model 'nope'"),
                             ({"model": "loras/style.safetensors"}, 400, "LoRA"),
                             ({"model": "corrupt.safetensors"}, 400, "not a model sdxld can load"),
                             ({"model": "tiny-b", "lora": "x"}, 400, "loads alone"),
                             ({"model": ["tiny-b"]}, 400, "expected a model name")):
        r = c.post("/v1/models/load", body)
        t.ok(r.status == code and what in r.error().get("message", ""), f"load {body}: {code} ({what})", r)


def check_failed_load(t, c, refs, served):
    gen(c, 11, served)   # the worker switches to the model a request names
    r = c.post("/v1/models/load", {"model": "broken"})
    e = r.error()
    t.ok(r.status >= 400 and e.get("field") == "model" and "'broken' does not load" in e.get("message", "")
         and f"{served} keeps serving" in e.get("message", "") and "/tmp" not in e.get("message", ""),
         "a model that does not load: its error names it (paths relative to models_dir)", r)
    r, _ = listing(c)
    t.eq((r.json()["data"][0]["name"], r.json()["default"]), (served, served), "... and the old model serves on")
    r = gen(c, 11)
    t.ok(r.status == 200 and pixels(r.body) == refs[11][served], "... making the same pixels", r)
    r = gen(c, 11, "broken")
    t.ok(r.status >= 400 and "'broken' does not load" in r.error().get("message", ""),
         "a job naming it fails with the model's name", r)


def check_switch(t, c, refs):
    r = c.post("/v1/models/load", {"model": "tiny-b"})
    t.ok(r.status == 200 and r.json().get("model") == "tiny-b" and r.json().get("freed_first") is False,
         "POST /v1/models/load {model}: the whole model switches (loaded before the old one is freed)", r)
    r, by = listing(c)
    t.ok(r.json()["data"][0]["name"] == "tiny-b" and by["tiny-b"]["loaded"] and not by["tiny-a"]["loaded"]
         and r.json()["default"] == "tiny-b", "GET /v1/models shows the new model loaded and default")
    r = gen(c, 12)
    t.ok(r.status == 200 and pixels(r.body) == refs[12]["tiny-b"], "generations now run on it", r)
    r = c.post("/v1/models/load", {"model": "tiny.safetensors"})
    t.ok(r.status == 200 and pixels(gen(c, 12).body) == refs[12]["tiny-a"], "a single-file checkpoint loads by name", r)
    r = c.post("/v1/models/load", {"generator": None, "lora": None})
    t.eq(r.status, 400, "the old fields keep their rules")


def check_queued_across_switch(t, c, refs):
    """Jobs queued before a switch run on the model they were queued for; after it on the new."""
    c.post("/v1/models/load", {"model": "tiny-a"})
    before = [c.post("/v1/generate", {"prompt": "a red cube", "seed": 11 + i % 2, "width": SIZE, "height": SIZE,
                                      "async": True}).json() for i in range(8)]
    queued = sum(1 for j in before if c.get(f"/v1/jobs/{j['id']}").json()["status"] == "queued")
    res = {}
    th = threading.Thread(target=lambda: res.update(r=c.post("/v1/models/load", {"model": "tiny-b"})))
    th.start()
    while c.get("/v1/models").json()["default"] != "tiny-b":   # the switch was accepted
        pass
    after = [c.post("/v1/generate", {"prompt": "a red cube", "seed": 11 + i % 2, "width": SIZE, "height": SIZE,
                                     "async": True}).json() for i in range(4)]
    th.join()
    t.ok(res["r"].status == 200, "the switch succeeded", res["r"])
    t.diag(f"{queued} of {len(before)} jobs were still queued when the switch was asked for")

    def got(j):
        c.wait_job(j["id"])
        r = c.get(f"/v1/jobs/{j['id']}/images/0")
        return pixels(r.body) if r.status == 200 else None
    t.ok(all(got(j) == refs[11 + i % 2]["tiny-a"] for i, j in enumerate(before)),
         "every job queued before the switch finished on the old model, pixels as it alone makes them")
    t.ok(all(got(j) == refs[11 + i % 2]["tiny-b"] for i, j in enumerate(after)),
         "every job queued after it ran on the new model")


def check_a1111(t, c, refs):
    titles = [m["title"] for m in c.get("/sdapi/v1/sd-models").json()]
    t.ok(set(WHOLE) <= set(titles), "/sdapi/v1/sd-models lists the catalog's whole models", titles)
    r = c.post("/sdapi/v1/options", {"sd_model_checkpoint": "tiny-a"})
    t.ok(r.status == 200 and r.json().get("sd_model_checkpoint") == "tiny-a"
         and c.get("/v1/models").json()["data"][0]["name"] == "tiny-a",
         "POST /sdapi/v1/options sd_model_checkpoint switches the whole model", r)
    r = c.post("/sdapi/v1/txt2img", {"prompt": "a red cube", "seed": 12, "width": SIZE, "height": SIZE, "steps": 4,
                                     "override_settings": {"sd_model_checkpoint": "tiny-b"}})
    img = base64.b64decode(r.json()["images"][0]) if r.status == 200 else b""
    info = json.loads(r.json()["info"]) if r.status == 200 else {}
    t.ok(r.status == 200 and pixels(img) == refs[12]["tiny-b"] and info.get("sd_model_name") == "tiny-b",
         "txt2img override_settings.sd_model_checkpoint runs that request on the model (info names it)", r)
    t.eq(c.get("/v1/models").json()["default"], "tiny-a", "... and leaves the default alone")


def budget_mb(by):
    """A budget holding any one of tiny-a, tiny-b and broken, no two of them, and not the f32
    single file (its weights are twice tiny-a's f16 ones)."""
    mib = 1 << 20
    one = max(by[n]["resident_bytes"] for n in ("tiny-a", "tiny-b", "broken"))
    two = min(by["tiny-a"]["resident_bytes"], by["broken"]["resident_bytes"]) + one
    mb = -(-one // mib)
    ok = mb * mib < two and mb * mib < by["tiny.safetensors"]["resident_bytes"]
    return mb if ok else None


def check_budget(t, tmp, md, refs, mb):
    t.ok(mb is not None, f"a budget that holds one tiny model but not two: {mb} MiB")
    with Daemon("--models_dir", md, "--model_config", MODEL, "--model_memory_mb", str(mb or 40), tmp=tmp,
                model=os.path.join(md, "tiny-a")) as d:
        c = d.client
        r = c.post("/v1/models/load", {"model": "tiny-b"})
        t.ok(r.status == 200 and r.json().get("freed_first") is True,
             f"budget {mb} MiB: tiny-b fits only instead of tiny-a: the old model is freed first", r)
        t.ok(pixels(gen(c, 11).body) == refs[11]["tiny-b"], "... and serves", None)
        r = c.post("/v1/models/load", {"model": "tiny.safetensors"})
        t.ok(r.status == 400 and "model_memory_mb" in r.error().get("message", ""),
             "a model over the budget alone is refused before anything is freed", r)
        r = gen(c, 11, "tiny.safetensors")
        t.eq(r.status, 400, "... also when a generation names it")
        r = c.post("/v1/models/load", {"model": "broken"})
        t.ok(r.status >= 400 and "tiny-b keeps serving" in r.error().get("message", ""),
             "a failed free-first load: the old model is loaded again", r)
        r = gen(c, 11)
        t.ok(r.status == 200 and pixels(r.body) == refs[11]["tiny-b"], "... and makes its pixels", r)
        t.ok("freeing tiny-b first" in d.log_text(), "the log says the old model was freed first")


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-models-")
    md = make_models(tmp)
    with Daemon("--models_dir", md, "--model_config", MODEL, "--max_batch", "4", "--max_n", "4", tmp=tmp,
                model=os.path.join(md, "tiny-a")) as d:
        c = d.client
        check_listing(t, c, md)
        mb = budget_mb(listing(c)[1])
        refs = references(c)
        check_named(t, c, refs)
        check_load_errors(t, c)
        check_failed_load(t, c, refs, "tiny-a")
        check_switch(t, c, refs)
        check_queued_across_switch(t, c, refs)
        check_a1111(t, c, refs)
        stats = load_run(c, refs, ["tiny-a", "tiny-b", "tiny.safetensors", "broken"], requests=40, switches=6)
        t.diag(f"load run: {stats}")
        t.ok(stats["lost"] == 0 and stats["wrong"] == 0 and stats["unexplained"] == 0,
             "load run: every job finished on the model it asked for, or failed naming the broken model", stats)
        t.ok(stats["ok"] > 0 and stats["switches_ok"] > 0, "load run: jobs ran and models switched", stats)
    check_budget(t, tmp, md, refs, mb)
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        t.diag(f"daemon logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

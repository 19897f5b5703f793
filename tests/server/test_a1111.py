#!/usr/bin/env python3
"""test_a1111.py — the AUTOMATIC1111 API subset (/sdapi/v1/...) as its clients call it.
Python standard library only (the `webuiapi` client itself is tests/ref/webuiapi_client.sh,
run by hand).  TAP output.

Daemons started here (the tiny model, 64x64 native size):
  1. max_n 8, max_batch 1 (every image generated alone, so images compare byte for byte
     with /v1/generate whatever the GEMM): txt2img images, seeds, batch_size x n_iter,
     steps, info and infotexts, parameters, ignored fields, A1111-shaped errors, sd-models,
     options, progress and interrupt;
  2. bearer tokens and a data_root holding a second generator (the tiny UNet with its
     weights scaled): auth, and switching the model through POST /sdapi/v1/options.
"""
import base64
import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MODEL, Client, Daemon, png_info, png_text, run_main  # noqa: E402

T2I = "/sdapi/v1/txt2img"
API_TOKEN = "api-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
# What webuiapi's WebUIApi.txt2img() sends by default (webuiapi 0.9), at the tiny size.
WEBUIAPI_DEFAULTS = {
    "enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0,
    "hr_resize_y": 0, "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0, "styles": [],
    "seed": -1, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0, "seed_resize_from_w": 0,
    "batch_size": 1, "n_iter": 1, "steps": 20, "cfg_scale": 7.0, "width": 64, "height": 64,
    "restore_faces": False, "tiling": False, "do_not_save_samples": False, "do_not_save_grid": False,
    "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1,
    "override_settings": {}, "override_settings_restore_afterwards": True, "sampler_name": "Euler a",
    "sampler_index": "Euler a", "script_name": None, "script_args": [], "send_images": True,
    "save_images": False, "alwayson_scripts": {},
}


def t2i(c, **fields):
    fields.setdefault("prompt", "a red cube")
    fields.setdefault("width", 64)
    fields.setdefault("height", 64)
    return c.post(T2I, fields)


def images(r):
    return [base64.b64decode(s) for s in r.json()["images"]] if r.status == 200 else []


def info(r):
    return json.loads(r.json()["info"]) if r.status == 200 else {}


def pixels(png):
    """The PNG's inflated image data (equal for equal pixels: the encoder is deterministic)."""
    idat, i = b"", 8
    while i + 8 <= len(png):
        n = int.from_bytes(png[i:i + 4], "big")
        if png[i + 4:i + 8] == b"IDAT":
            idat += png[i + 8:i + 8 + n]
        i += 12 + n
    return zlib.decompress(idat)


def generate_png(c, seed, prompt="a red cube", size=64):
    r = c.post("/v1/generate", {"prompt": prompt, "seed": seed, "width": size, "height": size,
                                "response_format": "png"})
    return r.body if r.status == 200 else None


def check_txt2img(t, c):
    r = t2i(c, seed=42)
    body = r.json() if r.status == 200 else {}
    t.ok(r.status == 200 and set(body) == {"images", "parameters", "info"} and isinstance(body["info"], str),
         "txt2img: 200 with images, parameters and info (a JSON string)", r)
    imgs = images(r)
    t.ok(len(imgs) == 1 and png_info(imgs[0]) == (64, 64), "one decodable 64x64 PNG, base64", r)
    t.ok(imgs and imgs[0] == generate_png(c, 42), "the PNG is byte for byte /v1/generate's with the same "
         "prompt, seed and size (pixels and infotext)")
    i = info(r)
    text = png_text(imgs[0], "parameters") if imgs else None
    t.ok(i.get("infotexts") == [text] and text.startswith("a red cube\nSteps: 4, Sampler: DMD2, CFG scale: 1, "
         "Seed: 42, Size: 64x64, Model: tiny-sdxl-a"), "info.infotexts is the A1111 infotext the PNG carries", i)
    want = {"prompt": "a red cube", "all_prompts": ["a red cube"], "seed": 42, "all_seeds": [42], "width": 64,
            "height": 64, "sampler_name": "DMD2", "cfg_scale": 1.0, "steps": 4, "batch_size": 1,
            "negative_prompt": "", "sd_model_name": "tiny-sdxl-a", "sd_model_hash": None, "ignored": []}
    t.eq({k: i.get(k) for k in want}, want, "info: A1111's fields, with what made the image")
    t.eq(r.json().get("parameters") if r.status == 200 else None,
         {"prompt": "a red cube", "width": 64, "height": 64, "seed": 42}, "parameters echoes the request")
    t.eq(r.headers.get("x-seed"), "42", "X-Seed names the first image's seed")


def check_seeds_and_batches(t, c):
    r = t2i(c, seed=100, batch_size=2, n_iter=3)
    imgs, i = images(r), info(r)
    t.ok(len(imgs) == 6 and all(png_info(p) == (64, 64) for p in imgs),
         "batch_size 2 x n_iter 3: six valid 64x64 PNGs", r)
    t.eq(i.get("all_seeds"), list(range(100, 106)), "all_seeds = seed .. seed + 5")
    t.ok(i.get("seed") == 100 and i.get("batch_size") == 2 and i.get("all_prompts") == ["a red cube"] * 6,
         "info: seed, batch_size, all_prompts", i)
    t.ok([png_text(p, "parameters") for p in imgs] == i.get("infotexts")
         and all(f"Seed: {100 + k}," in s for k, s in enumerate(i.get("infotexts", []))),
         "each image's infotext carries its own seed", i.get("infotexts"))
    t.ok(len(imgs) == 6 and imgs[3] == generate_png(c, 103), "image 3 equals /v1/generate with seed + 3")
    r = t2i(c, seed=-1, batch_size=2)
    i = info(r)
    s = i.get("seed")
    t.ok(isinstance(s, int) and 0 <= s < 2**63 and i.get("all_seeds") == [s, s + 1]
         and r.headers.get("x-seed") == str(s), "seed -1: a random seed, reported with seed + 1", i)
    t.ok(images(r) and images(r)[0] == generate_png(c, s), "... and the random seed regenerates the image")
    r = t2i(c)
    t.ok(r.status == 200 and isinstance(info(r).get("seed"), int), "no seed: random too", r)


def check_steps_and_ignored(t, c):
    for asked, ran in ((1, 1), (2, 2), (4, 4), (20, 4), (None, 4)):
        r = t2i(c, seed=3, **({"steps": asked} if asked else {}))
        i = info(r)
        t.ok(i.get("steps") == ran and f"Steps: {ran}," in (i.get("infotexts") or [""])[0],
             f"steps {asked}: runs {ran} DMD2 steps (info.steps and the infotext)", i)
    one = images(t2i(c, seed=3, steps=20))
    r = t2i(c, seed=3, steps=20, negative_prompt="blurry", sampler_name="DPM++ 2M", scheduler="Karras",
            cfg_scale=9.5, eta=0.5)
    i = info(r)
    t.ok(images(r) == one and i.get("sampler_name") == "DMD2" and i.get("cfg_scale") == 1.0,
         "negative_prompt, sampler_name, scheduler, cfg_scale, eta change nothing: the same PNG", i)
    t.eq(sorted(i.get("ignored", [])), ["cfg_scale", "eta", "negative_prompt", "sampler_name", "scheduler"],
         "info.ignored names them")
    rq = c.get(f"/v1/jobs/{r.headers.get('x-job-id')}?b64_json=false").json().get("request", {})
    t.eq(rq.get("ignored"), {"negative_prompt": "blurry", "sampler_name": "DPM++ 2M", "scheduler": "Karras",
                             "cfg_scale": 9.5, "eta": 0.5}, "the job's request records them as sent")
    t.eq(r.json()["parameters"].get("negative_prompt") if r.status == 200 else None, "blurry",
         "parameters echoes the negative prompt")
    r = c.post(T2I, dict(WEBUIAPI_DEFAULTS, prompt="a red cube", seed=3))
    t.ok(r.status == 200 and images(r) == one, "webuiapi's default request (20 steps, hires fix off, ...) is "
         "accepted and gives the same image", r)
    r = t2i(c, seed=3, send_images=False)
    t.ok(r.status == 200 and r.json()["images"] == [] and info(r).get("all_seeds") == [3],
         "send_images false: no images, info still there", r)
    r = t2i(c, seed=3, override_settings={"sd_model_checkpoint": "tiny-sdxl-a", "CLIP_stop_at_last_layers": 2})
    t.ok(r.status == 200 and images(r) == one and "override_settings" in info(r).get("ignored", []),
         "override_settings naming the served model: accepted, the other settings ignored", r)


def check_errors(t, c):
    cases = [({"width": 65}, "width"), ({"width": "64"}, "width"), ({"height": 4096}, "height"),
             ({"seed": -2}, "seed"), ({"seed": 2**63 - 1, "batch_size": 2}, "seed"), ({"steps": 0}, "steps"),
             ({"batch_size": 0}, "batch_size"), ({"batch_size": 9}, "batch_size"),
             ({"batch_size": 4, "n_iter": 3}, "n_iter"), ({"prompt": ["a", "b"]}, "prompt"),
             ({"bogus": 1}, "bogus"), ({"enable_hr": True}, "enable_hr"), ({"restore_faces": True}, "restore_faces"),
             ({"styles": ["anime"]}, "styles"), ({"subseed_strength": 0.5}, "subseed_strength"),
             ({"alwayson_scripts": {"ControlNet": {"args": []}}}, "alwayson_scripts"),
             ({"script_name": "x/y/z plot"}, "script_name"), ({"cfg_scale": "high"}, "cfg_scale"),
             ({"send_images": 1}, "send_images"),
             ({"override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"}}, "override_settings")]
    for extra, field in cases:
        body = dict({"prompt": "x", "width": 64, "height": 64}, **extra)
        r = c.post(T2I, body)
        e = r.json() if r.headers.get("content-type") == "application/json" else {}
        d = e.get("detail") if isinstance(e.get("detail"), list) else [{}]
        t.ok(r.status == 422 and e.get("error") == "RequestValidationError" and d[0].get("loc") == ["body", field]
             and field in d[0].get("msg", "") and e.get("body") == body and e.get("errors") == d[0].get("msg"),
             f"{extra}: 422 in FastAPI/A1111's shape, loc ['body', {field!r}]", r)
    r = c.request("POST", T2I, b'{"prompt": ', headers={"Content-Type": "application/json"})
    e = r.json()
    t.ok(r.status == 400 and e.get("error") == "HTTPException" and e.get("body") == ""
         and e.get("errors") == "400: " + e.get("detail", ""), "malformed JSON: 400 in A1111's shape", r)
    r = c.get(T2I)
    t.ok(r.status == 405 and r.json().get("error") == "HTTPException", "GET on txt2img: 405 in A1111's shape", r)
    r = c.request("POST", T2I, "prompt=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    t.ok(r.status == 415 and "detail" in r.json(), "a form body: 415 in A1111's shape", r)
    r = c.get("/sdapi/v1/samplers")
    t.eq(r.status, 404, "an A1111 route sdxld does not serve (samplers) is 404")
    r = c.post("/v1/generate", {"prompt": "x", "width": 7})
    t.ok(r.status == 400 and r.json()["error"].get("field") == "width", "other routes keep the daemon's shape", r)


def check_models_options(t, c):
    r = c.get("/sdapi/v1/sd-models")
    t.ok(r.status == 200 and r.json() == [{"title": "tiny-sdxl-a", "model_name": "tiny-sdxl-a", "hash": None,
                                          "sha256": None, "filename": MODEL, "config": None}],
         "sd-models: the served model in A1111's list shape", r)
    r = c.get("/sdapi/v1/options")
    t.ok(r.status == 200 and r.json().get("sd_model_checkpoint") == "tiny-sdxl-a", "options: sd_model_checkpoint", r)
    r = c.post("/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sdxl-a", "samples_format": "jpg",
                                     "CLIP_stop_at_last_layers": 2})
    t.ok(r.status == 200 and r.json().get("sd_model_checkpoint") == "tiny-sdxl-a",
         "options POST with the served model and other settings: 200, nothing to switch", r)
    t.eq(c.get("/sdapi/v1/options").json().get("samples_format"), "png", "... the other settings are ignored")
    r = c.post("/sdapi/v1/options", {"sd_model_checkpoint": 5})
    t.ok(r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "sd_model_checkpoint"],
         "options: a checkpoint that is not a string is 422", r)


def idle(c):
    p = c.get("/sdapi/v1/progress").json()
    return p["progress"] == 0 and p["state"]["job_count"] == 0 and p["state"]["job"] == ""


def watch_progress(c, job_id):
    """The progress answers that report job_id, polled until the job has ended."""
    seen, end = [], time.time() + 120
    while time.time() < end:
        p = c.get("/sdapi/v1/progress?skip_current_image=false").json()
        time.sleep(0.01)   # not a bound: spares the daemon a flood of connections
        if p["state"]["job"] == job_id:
            seen.append(p)
        elif c.get(f"/v1/jobs/{job_id}?b64_json=false").json()["status"] in ("succeeded", "failed", "cancelled"):
            break
    return seen


def check_progress(t, c):
    t.ok(idle(c), "progress while idle: 0, job_count 0 (what webuiapi's util_wait_for_ready waits for)")
    r = c.post("/v1/generate", {"prompt": "slow", "n": 8, "width": 128, "height": 128, "async": True})
    jid = r.json()["id"]
    seen = watch_progress(c, jid)
    ok = bool(seen)
    for p in seen:
        s = p["state"]
        want = (s["job_no"] + s["sampling_step"] / s["sampling_steps"]) / s["job_count"]
        ok = ok and s["job_count"] == 8 and s["sampling_steps"] == 4 and abs(p["progress"] - want) < 1e-9
        ok = ok and 0 <= p["progress"] <= 1 and p["eta_relative"] >= 0 and p["current_image"] is None
    t.ok(ok, "progress of a running job: its id, job_count 8 images, 4 sampling steps, progress = (job_no + "
         "sampling_step / sampling_steps) / job_count", seen[:3])
    vals = [p["progress"] for p in seen]
    t.ok(vals == sorted(vals), "progress never goes back", vals)
    c.wait_job(jid)
    t.ok(idle(c), "idle again once the job ended")


def check_interrupt(t, c):
    t.eq(c.post("/sdapi/v1/interrupt").json(), {"interrupted": []}, "interrupt while idle: nothing to cancel")
    out = {}

    def sync_call():
        out["r"] = c.post(T2I, {"prompt": "interrupt me", "seed": 9, "batch_size": 4, "n_iter": 2,
                                "width": 128, "height": 128})
    th = threading.Thread(target=sync_call)
    th.start()
    jid, end = "", time.time() + 60
    while not jid and time.time() < end and th.is_alive():
        jid = c.get("/sdapi/v1/progress").json()["state"]["job"]
        time.sleep(0.01)
    queued = c.post("/v1/generate", {"prompt": "queued behind", "async": True, "width": 64, "height": 64})
    r = c.post("/sdapi/v1/interrupt")
    th.join()
    t.ok(jid and r.status == 200 and r.json() == {"interrupted": [jid]},
         "interrupt cancels the running txt2img job and names it", (jid, r))
    res = out.get("r")
    e = res.json() if res else {}
    t.ok(res is not None and res.status == 409 and e.get("error") == "HTTPException"
         and "interrupted" in e.get("detail", ""), "the waiting txt2img client gets 409 in A1111's shape", res)
    j = c.get(f"/v1/jobs/{jid}?b64_json=false").json()
    t.ok(j["status"] == "cancelled" and j["error"]["code"] == "cancelled", "the job ended cancelled", j)
    j = c.wait_job(queued.json()["id"])
    t.eq(j["status"], "succeeded", "a queued job is not interrupted")


def scaled_generator(src, dst, factor):
    """A copy of a F16/F32 safetensors UNet with every weight multiplied by factor."""
    with open(src, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    data = bytearray(raw[8 + n:])
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        fmt = {"F16": "e", "F32": "f"}[v["dtype"]]
        b, e = v["data_offsets"]
        count = (e - b) // struct.calcsize(fmt)
        vals = struct.unpack_from(f"<{count}{fmt}", data, b)
        struct.pack_into(f"<{count}{fmt}", data, b, *(x * factor for x in vals))
    with open(dst, "wb") as f:
        f.write(raw[:8 + n] + bytes(data))


def check_switch(t, c, admin):
    before = images(t2i(c, seed=5))
    r = c.post("/sdapi/v1/options", {"sd_model_checkpoint": "gen.safetensors"})
    t.ok(r.status == 401 and r.json().get("error") == "HTTPException",
         "switching the model with an api token: 401 (it needs an admin token)", r)
    r = admin.post("/sdapi/v1/options", {"sd_model_checkpoint": "missing.safetensors"})
    t.ok(r.status == 400 and "sd_model_checkpoint" in r.json().get("detail", ""),
         "switching to a file that is not under data_root: 400 naming sd_model_checkpoint", r)
    r = admin.post("/sdapi/v1/options", {"sd_model_checkpoint": "gen.safetensors"})
    t.ok(r.status == 200 and r.json().get("sd_model_checkpoint") == "tiny-sdxl-a:gen.safetensors",
         "an admin switches to a generator under data_root through the model-load job", r)
    m = c.get("/sdapi/v1/sd-models").json()
    t.ok([x["title"] for x in m] == ["tiny-sdxl-a:gen.safetensors", "tiny-sdxl-a"]
         and m[1]["filename"] == os.path.relpath(MODEL),
         "sd-models: the served generator first, then the model folder's own UNet", m)
    t.eq(c.get("/sdapi/v1/options").json().get("sd_model_checkpoint"), "tiny-sdxl-a:gen.safetensors",
         "options reports the new checkpoint")
    r = t2i(c, seed=5)
    after = images(r)
    t.ok(after and before and pixels(after[0]) != pixels(before[0])
         and "Model: tiny-sdxl-a:gen.safetensors" in info(r)["infotexts"][0],
         "txt2img now runs the new generator (other pixels, its name in the infotext)", r)
    r = admin.post("/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sdxl-a"})
    t.ok(r.status == 200 and r.json().get("sd_model_checkpoint") == "tiny-sdxl-a",
         "switching back to the model folder's own UNet by its title", r)
    again = images(t2i(c, seed=5))
    t.ok(again and before and again[0] == before[0], "... gives the first image again, byte for byte")


def auth_daemon_checks(t, tmp):
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    scaled_generator(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"),
                     os.path.join(root, "gen.safetensors"), 0.9)
    files = []
    for name, tok in (("api.tokens", API_TOKEN), ("admin.tokens", ADMIN_TOKEN)):
        files.append(os.path.join(tmp, name))
        with open(files[-1], "w") as f:
            f.write(tok + "\n")
        os.chmod(files[-1], 0o600)
    # the model named by a relative path: a generator load reads the model folder again,
    # confined to its real path (a relative model path used to fail the load)
    with Daemon("--api_token_file", files[0], "--admin_token_file", files[1], "--data_root", root,
                model=os.path.relpath(MODEL), tmp=tmp) as d:
        c = d.client
        for method, path in (("POST", T2I), ("GET", "/sdapi/v1/sd-models"), ("GET", "/sdapi/v1/options"),
                             ("POST", "/sdapi/v1/options"), ("GET", "/sdapi/v1/progress"),
                             ("POST", "/sdapi/v1/interrupt")):
            r = c.request(method, path, {"prompt": "x"} if method == "POST" else None)
            t.ok(r.status == 401 and r.json().get("error") == "HTTPException"
                 and r.headers.get("www-authenticate", "").startswith("Bearer"),
                 f"auth on: {method} {path} without a token is 401 in A1111's shape", r)
        c.token = API_TOKEN
        t.eq(t2i(c, seed=1).status, 200, "auth on: txt2img with an api token")
        check_switch(t, c, Client(c.host, c.port, ADMIN_TOKEN))


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-a1111-")
    with Daemon("--max_n", "8", "--max_batch", "1", tmp=tmp) as d:
        check_txt2img(t, d.client)
        check_seeds_and_batches(t, d.client)
        check_steps_and_ignored(t, d.client)
        check_errors(t, d.client)
        check_models_options(t, d.client)
        check_progress(t, d.client)
        check_interrupt(t, d.client)
    auth_daemon_checks(t, tmp)
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        t.diag(f"daemon logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

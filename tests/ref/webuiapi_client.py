#!/usr/bin/env python3
"""The `webuiapi` client (AUTOMATIC1111 API) against `sdxld serve` (/sdapi/v1/...): txt2img
with seeds, batch_size x n_iter and the infotext in the PNG, the model list, switching the
checkpoint through options, progress, interrupt, util_wait_for_ready, a refused field
raised as the client's error, and img2img (denoising_strength; a mask, inverted too).  Not run in CI (it needs the client from PyPI); run by hand
through tests/ref/webuiapi_client.sh, which makes the virtual environment.

Prints one line per check and exits non-zero if one failed.
"""
import io
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import webuiapi  # noqa: E402
from harness import MODEL, Daemon  # noqa: E402
from test_a1111 import scaled_generator  # noqa: E402
from test_img2img import halves_differ, picture, white_left_mask  # noqa: E402
from PIL import Image  # noqa: E402  (webuiapi's own dependency)

failed = 0


def check(cond, what, detail=""):
    global failed
    failed += not cond
    print(f"{'ok  ' if cond else 'FAIL'} {what}" + (f"  [{detail}]" if detail and not cond else ""))


def check_txt2img(api):
    r = api.txt2img(prompt="a red cube", seed=42, width=64, height=64)
    check(len(r.images) == 1 and r.image.size == (64, 64), "txt2img: one 64x64 image (PIL)", r.images)
    check(r.info.get("all_seeds") == [42] and r.info.get("steps") == 4 and r.info.get("sampler_name") == "DMD2",
          "info parsed: seed 42, 4 DMD2 steps (the client asked for 20 with Euler a)", r.info)
    check(r.info["infotexts"][0] == r.image.info.get("parameters"), "the PNG's parameters text is info.infotexts[0]",
          r.image.info)
    r = api.txt2img(prompt="a blue star", seed=7, width=64, height=64, batch_size=2, n_iter=2,
                    negative_prompt="blurry", cfg_scale=5)
    check(len(r.images) == 4 and r.info.get("all_seeds") == [7, 8, 9, 10], "batch_size 2 x n_iter 2: four images, "
          "seeds 7..10", r.info.get("all_seeds"))
    check(set(r.info.get("ignored", [])) >= {"negative_prompt", "cfg_scale"}, "negative_prompt and cfg_scale "
          "reported as ignored", r.info.get("ignored"))
    try:
        api.txt2img(prompt="x", width=64, height=64, enable_hr=True)
        check(False, "enable_hr raises")
    except RuntimeError as e:
        check(e.args[0] == 422 and "enable_hr" in e.args[1], "enable_hr True: the client raises with 422 naming "
              "enable_hr", e.args)


def check_img2img(api):
    init = Image.open(io.BytesIO(picture()))
    mask = Image.open(io.BytesIO(white_left_mask()))
    r = api.img2img(images=[init], prompt="a red circle", seed=3, denoising_strength=0.5, width=64, height=64)
    check(len(r.images) == 1 and r.image.size == (64, 64) and r.info.get("denoising_strength") == 0.5
          and "Denoising strength: 0.5" in r.image.info.get("parameters", ""),
          "img2img at denoising_strength 0.5: a 64x64 image, info and the PNG's infotext say the strength", r.info)
    px = []
    for seed in (1, 2):
        r = api.img2img(images=[init], mask_image=mask, prompt="a red circle", seed=seed, denoising_strength=1.0,
                        width=64, height=64)
        px.append(r.image.convert("RGB").tobytes())
    left, right = halves_differ(*px)
    check(right == 0 and left > 1, f"img2img with a white-left mask: the black right half kept across seeds "
          f"(difference {right}), the left repainted ({left:.1f})")
    r = api.img2img(images=[init], mask_image=mask, inpainting_mask_invert=1, prompt="x", seed=4, width=64, height=64)
    left, _ = halves_differ(r.image.convert("RGB").tobytes(), px[0])
    check(len(r.images) == 1 and left > 1, "inpainting_mask_invert 1 repaints the other half")
    try:
        api.img2img(images=[init], prompt="x", denoising_strength=0.1, width=64, height=64)
        check(False, "denoising_strength 0.1 raises")
    except RuntimeError as e:
        check(e.args[0] == 422 and "denoising_strength" in e.args[1], "denoising_strength 0.1 (no step left): the "
              "client raises with 422 naming it", e.args)


def check_models(api):
    check(api.util_get_model_names() == ["tiny-sdxl-a"], "util_get_model_names", api.util_get_model_names())
    check(api.util_get_current_model() == "tiny-sdxl-a", "util_get_current_model")
    res = api.set_options({"sd_model_checkpoint": "gen.safetensors", "CLIP_stop_at_last_layers": 2})
    check(res == {"sd_model_checkpoint": "tiny-sdxl-a:gen.safetensors"}, "set_options answers the new checkpoint", res)
    check(api.util_get_current_model() == "tiny-sdxl-a:gen.safetensors", "set_options switches the checkpoint",
          api.util_get_current_model())
    check(sorted(api.util_get_model_names()) == ["tiny-sdxl-a", "tiny-sdxl-a:gen.safetensors"],
          "the list shows both", api.util_get_model_names())
    api.util_set_model("tiny-sdxl-a")
    check(api.util_get_current_model() == "tiny-sdxl-a", "util_set_model switches back")


def check_progress_interrupt(api):
    p = api.get_progress()
    check(p["progress"] == 0 and p["state"]["job_count"] == 0, "get_progress while idle", p)
    out = {}

    def run():
        try:
            out["r"] = api.txt2img(prompt="slow", seed=1, width=128, height=128, batch_size=4, n_iter=2)
        except RuntimeError as e:
            out["e"] = e
    th = threading.Thread(target=run)
    th.start()
    seen = None
    while th.is_alive() and not seen:
        p = api.get_progress()
        seen = p if p["state"]["job"] else None
        time.sleep(0.01)
    check(seen is not None and seen["state"]["job_count"] == 8, "get_progress during txt2img: its job", seen)
    api.interrupt()
    th.join()
    check("e" in out and out["e"].args[0] == 409, "interrupt: the waiting txt2img raises with 409", out)
    api.util_wait_for_ready(check_interval=0.05)
    check(api.get_progress()["state"]["job_count"] == 0, "util_wait_for_ready returns once idle")


def main():
    tmp = tempfile.mkdtemp(prefix="sdxld-webuiapi-")
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    scaled_generator(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"),
                     os.path.join(root, "gen.safetensors"), 0.9)
    with Daemon("--max_n", "8", "--max_batch", "1", "--data_root", root, tmp=tmp) as d:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=d.port)
        print(f"webuiapi against sdxld on port {d.port}")
        check_txt2img(api)
        check_img2img(api)
        check_models(api)
        check_progress_interrupt(api)
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""test_img2img.py — img2img and inpainting over HTTP: POST /v1/generate's init_image,
strength and mask; POST /v1/images/edits (multipart, OpenAI's shape); POST
/sdapi/v1/img2img (A1111's shape).  Python standard library only (the client libraries
are tests/ref/openai_client.sh and webuiapi_client.sh, run by hand).  TAP output.

One daemon, the tiny model at 64x64.  The engine-level properties (strength 1 equals
txt2img, distance falling with strength, the kept pixels equal to the VAE round trip,
batch independence) are tests/test_img2img.c; here: that every route gets the images to
the engine, what comes back, and that every bad input is a clear 400 (422 for A1111)
naming its field.
"""
import base64
import json
import os
import struct
import sys
import uuid
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, png_rgb, png_text, run_main  # noqa: E402

S = 64


def png_bytes(w, h, pixels, alpha=False):
    """An 8-bit RGB(A) PNG of pixels (rows of RGB or RGBA bytes)."""
    ch = 4 if alpha else 3
    raw = b"".join(b"\x00" + pixels[y * w * ch:(y + 1) * w * ch] for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6 if alpha else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def picture(w=S, h=S):
    """A yellow field with a blue square."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            px += bytes((30, 30, 200)) if 16 <= x < 44 and 20 <= y < 48 else bytes((240, 220, 40))
    return png_bytes(w, h, bytes(px))


def white_left_mask(w=S, h=S, value=None):
    """White (repaint) on the left half, black on the right; value: one gray level everywhere."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            v = value if value is not None else (255 if x < w // 2 else 0)
            px += bytes((v, v, v))
    return png_bytes(w, h, bytes(px))


def alpha_left_mask(w=S, h=S, opaque=False):
    """OpenAI's mask: transparent (alpha 0: edit) on the left half."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            px += bytes((0, 0, 0, 255 if opaque or x >= w // 2 else 0))
    return png_bytes(w, h, bytes(px), alpha=True)


def b64(b):
    return base64.b64encode(b).decode()


def pixels(png):
    got = png_rgb(png)
    return got[2] if got else None


def halves_differ(a, b):
    """Mean absolute difference of the left halves and of the right halves."""
    left = right = 0
    for i in range(0, len(a), 3):
        d = sum(abs(a[i + c] - b[i + c]) for c in range(3))
        if (i // 3) % S < S // 2:
            left += d
        else:
            right += d
    n = len(a) // 2
    return left / n, right / n


def multipart(fields):
    """fields: name -> str, or (filename, bytes, content type); a dict or a list of pairs.
    (body, content type)."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, v in (fields.items() if isinstance(fields, dict) else fields):
        out += f"--{boundary}\r\n".encode()
        if isinstance(v, tuple):
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{v[0]}"\r\n'
                    f"Content-Type: {v[2]}\r\n\r\n").encode() + v[1] + b"\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{v}\r\n'.encode()
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def edit(c, fields):
    body, ct = multipart(fields)
    return c.post("/v1/images/edits", body, headers={"Content-Type": ct})


def first_b64(r, key="images"):
    return base64.b64decode(r.json()[key][0]) if key == "images" else base64.b64decode(r.json()["data"][0]["b64_json"])


def png_gen(c, **fields):
    fields.setdefault("response_format", "png")
    return c.generate(**fields)


def check_generate(t, c):
    init = picture()
    r = png_gen(c, prompt="a red circle", seed=5)
    txt = pixels(r.body) if r.status == 200 else None
    r = png_gen(c, prompt="a red circle", seed=5, init_image=b64(init), strength=1.0)
    t.ok(r.status == 200 and txt is not None and pixels(r.body) == txt,
         "/v1/generate: strength 1 with an init image gives the txt2img pixels of the seed", r)
    r = png_gen(c, prompt="a red circle", seed=5, init_image=b64(init), strength=0.5)
    t.ok(r.status == 200 and "Denoising strength: 0.5" in (png_text(r.body, "parameters") or ""),
         "/v1/generate: strength 0.5 runs; the PNG's infotext has Denoising strength", r)
    j = c.get(f"/v1/jobs/{r.headers.get('x-job-id')}?b64_json=false").json().get("request", {})
    t.ok(j.get("strength") == 0.5 and j.get("init_image") is True and j.get("mask") is False,
         "the job's request shows strength, init_image and mask (not the images)", j)
    r = c.post("/v1/generate", {"prompt": "x", "seed": 5, "init_image": "data:image/png;base64," + b64(init),
                                "strength": 0.5, "response_format": "png"})
    t.ok(r.status == 200 and png_rgb(r.body)[:2] == (S, S),
         "a data: URL works, and without width and height the size is the image's", r)
    jpg = c.post("/v1/images/generations", {"prompt": "x", "size": "64x64", "output_format": "jpeg"})
    webp = c.post("/v1/images/generations", {"prompt": "x", "size": "64x64", "output_format": "webp"})
    for name, resp in (("JPEG", jpg), ("WebP", webp)):
        img = first_b64(resp, "data") if resp.status == 200 else b""
        r = png_gen(c, prompt="x", init_image=b64(img), strength=0.75)
        t.ok(r.status == 200 and pixels(r.body), f"a {name} init image works", r)
    a = png_gen(c, prompt="a", seed=1, init_image=b64(init), mask=b64(white_left_mask()))
    b = png_gen(c, prompt="b", seed=2, init_image=b64(init), mask=b64(white_left_mask()))
    if a.status == 200 and b.status == 200:
        left, right = halves_differ(pixels(a.body), pixels(b.body))
        t.ok(right == 0 and left > 1, f"two masked edits keep the same right half (difference {right}) and "
             f"repaint the left one differently ({left:.1f})")
    else:
        t.ok(False, "masked edits", (a, b))


def check_generate_errors(t, c):
    init = b64(picture())
    bad = [
        ({"init_image": "!!not base64!!"}, "init_image", "not base64"),
        ({"init_image": b64(b"hello, not an image")}, "init_image", "not a PNG, JPEG or WebP"),
        ({"init_image": b64(picture()[:60])}, "init_image", "png"),
        ({"init_image": 42}, "init_image", "expected a base64"),
        ({"init_image": b64(picture(128, 64))}, "init_image", "the request's size is 64x64"),
        ({"init_image": init, "strength": 0.2}, "strength", "leaves no step"),
        ({"init_image": init, "strength": 1.5}, "strength", "outside (0, 1]"),
        ({"init_image": init, "strength": 0}, "strength", "outside (0, 1]"),
        ({"init_image": init, "strength": "high"}, "strength", "expected a number"),
        ({"strength": 0.5}, "strength", "needs init_image"),
        ({"mask": b64(white_left_mask())}, "mask", "needs init_image"),
        ({"init_image": init, "mask": b64(white_left_mask(128, 64))}, "mask", "the request's size"),
        ({"init_image": init, "mask": b64(white_left_mask(value=0))}, "mask", "marks no pixel"),
        ({"init_image": init, "mask": "???"}, "mask", "not base64"),
    ]
    for extra, field, words in bad:
        r = c.generate(prompt="x", **extra)
        e = r.error()
        t.ok(r.status == 400 and e.get("field") == field and words in e.get("message", ""),
             f"/v1/generate {sorted(extra)} ({words}): 400 naming {field}", r)


def check_edits(t, c):
    img = ("in.png", picture(), "image/png")
    r = edit(c, {"image": img, "prompt": "a red circle", "response_format": "b64_json"})
    t.ok(r.status == 200 and r.json().get("size") == "64x64" and png_rgb(first_b64(r, "data"))[:2] == (S, S),
         "/v1/images/edits: image and prompt, the size is the image's", r)
    r = edit(c, {"image": img, "mask": ("m.png", alpha_left_mask(), "image/png"), "prompt": "x", "n": "2",
                 "size": "64x64", "response_format": "url"})
    data = r.json().get("data", []) if r.status == 200 else []
    t.ok(len(data) == 2 and all(d.get("url", "").startswith("http://") for d in data),
         "image, mask, n 2 (a form's text), size and response_format url", r)
    if len(data) == 2:
        imgs = [pixels(c.get(d["url"][d["url"].index("/v1/"):]).body) for d in data]
        left, right = halves_differ(*imgs)
        t.ok(right == 0 and left > 1, f"the mask's opaque half is kept (difference {right}), its transparent "
             f"half edited ({left:.1f})")
    r = edit(c, {"image": img, "prompt": "x", "strength": "0.5", "output_format": "webp"})
    t.ok(r.status == 200 and first_b64(r, "data")[:4] == b"RIFF", "strength 0.5 and output_format webp", r)
    bad = [
        ({"prompt": "x"}, "image", "required"),
        ({"image": ("x.png", b"not an image", "image/png"), "prompt": "x"}, "image", "not a PNG"),
        ({"image": img, "mask": ("m.png", alpha_left_mask(opaque=True), "image/png"), "prompt": "x"}, "mask",
         "alpha 0"),
        ({"image": img, "mask": ("m.png", alpha_left_mask(32, 32), "image/png"), "prompt": "x"}, "mask", "size"),
        ({"image": img, "prompt": "x", "strength": "0.1"}, "strength", "leaves no step"),
        ({"image": img, "prompt": "x", "n": "two"}, "n", "expected an integer"),
        ({"image": img}, "prompt", "required"),
        ({"image": img, "prompt": "x", "colour": "red"}, "colour", "unknown field"),
        ({"image": img, "prompt": "x", "size": "128x128"}, "image", "the request's size is 128x128"),
    ]
    for fields, param, words in bad:
        r = edit(c, fields)
        e = r.error()
        t.ok(r.status == 400 and e.get("param") == param and e.get("type") == "invalid_request_error"
             and words in e.get("message", ""), f"edits {sorted(fields)} ({words}): 400 in OpenAI's shape, "
             f"param {param}", r)
    r = c.post("/v1/images/edits", {"prompt": "x"})
    t.ok(r.status == 415 and "multipart/form-data" in r.error().get("message", ""),
         "a JSON body on the edits route is 415 naming multipart/form-data", r)
    r = c.post("/v1/images/edits", b"garbage", headers={"Content-Type": "multipart/form-data; boundary=zz"})
    t.ok(r.status == 400 and r.error().get("code") == "invalid_form", "a body that is no form is 400", r)
    r = edit(c, [("image", img), ("prompt", "x"), ("prompt", "y")])
    t.ok(r.status == 400 and "twice" in r.error().get("message", ""), "a field given twice is 400", r)
    r = edit(c, [("image", img)] + [(f"f{i}", "x") for i in range(40)])
    t.ok(r.status == 400 and "more than 32 fields" in r.error().get("message", ""), "40 fields are 400", r)


def check_a1111(t, c):
    init = b64(picture())
    r = c.post("/sdapi/v1/img2img", {"init_images": [init], "prompt": "a red circle", "denoising_strength": 0.5,
                                      "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler a",
                                      "steps": 20, "resize_mode": 0, "inpaint_full_res": True})
    body = r.json() if r.status == 200 else {}
    info = json.loads(body.get("info", "{}"))
    t.ok(r.status == 200 and len(body.get("images", [])) == 1 and info.get("denoising_strength") == 0.5
         and "Denoising strength: 0.5" in info.get("infotexts", [""])[0]
         and body.get("parameters", {}).get("init_images") is None,
         "/sdapi/v1/img2img: an image, info with denoising_strength and the infotext, init_images not echoed", r)
    a = c.post("/sdapi/v1/img2img", {"init_images": [init], "mask": b64(white_left_mask()), "seed": 1,
                                      "inpainting_mask_invert": 1, "denoising_strength": 1.0})
    b = c.post("/sdapi/v1/img2img", {"init_images": [init], "mask": b64(white_left_mask()), "seed": 2,
                                      "inpainting_mask_invert": 1, "denoising_strength": 1.0})
    if a.status == 200 and b.status == 200:
        left, right = halves_differ(pixels(first_b64(a)), pixels(first_b64(b)))
        t.ok(left == 0 and right > 1, f"inpainting_mask_invert 1: black repaints, the white left half is kept "
             f"(difference {left}, right {right:.1f})")
    else:
        t.ok(False, "masked img2img", (a, b))
    m = c.post("/sdapi/v1/img2img", {"init_images": [init], "mask": b64(alpha_left_mask()), "seed": 1,
                                      "denoising_strength": 1.0})
    if m.status == 200 and a.status == 200:
        t.ok(pixels(first_b64(m)) == pixels(first_b64(a)), "an RGBA mask is read by its alpha (opaque = "
             "repaint, as A1111): the same image as the inverted white mask, same seed")
    else:
        t.ok(False, "an RGBA mask", m)
    bad = [
        ({"prompt": "x"}, "init_images", "a list of one"),
        ({"init_images": [init, init]}, "init_images", "a list of one"),
        ({"init_images": ["@@@"]}, "init_images", "not base64"),
        ({"init_images": [init], "denoising_strength": 0.1}, "denoising_strength", "leaves no step"),
        ({"init_images": [init], "mask": b64(b"junk")}, "mask", "not a PNG"),
        ({"init_images": [init], "inpainting_mask_invert": 2}, "inpainting_mask_invert", "out of range"),
        ({"init_images": [init], "width": 128, "height": 64}, "init_images", "the request's size"),
        ({"init_images": [init], "latent_mask": "x"}, "latent_mask", "not supported"),
    ]
    for fields, field, words in bad:
        r = c.post("/sdapi/v1/img2img", fields)
        d = r.json().get("detail", [{}]) if r.status == 422 else [{}]
        t.ok(r.status == 422 and d[0].get("loc") == ["body", field] and words in d[0].get("msg", ""),
             f"img2img {sorted(fields)} ({words}): 422 at body.{field}", r)


def main(t):
    d = Daemon()
    try:
        c = d.client
        check_generate(t, c)
        check_generate_errors(t, c)
        check_edits(t, c)
        check_a1111(t, c)
        r = c.get("/healthz")
        t.ok(r.status == 200 and d.proc.poll() is None, "the daemon is alive after every bad input", r)
    finally:
        d.stop()


if __name__ == "__main__":
    run_main(main)

#!/usr/bin/env python3
"""The official `openai` Python client against `sdxld serve` (POST /v1/images/generations):
generate with b64_json and url, png/jpeg/webp with output_compression, size auto, the
quality/style/user/model fields clients send, and errors raised as the client's own
exceptions naming the param; images.edit (POST /v1/images/edits) with an image, and with
an image and a mask (alpha 0 = edit).  Not run in CI (it needs the client from PyPI); run by hand
through tests/ref/openai_client.sh, which makes the virtual environment.

Prints one line per check and exits non-zero if one failed.
"""
import base64
import os
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import openai  # noqa: E402
from harness import Daemon, jpeg_info, png_info, png_rgb, webp_info  # noqa: E402
from test_img2img import alpha_left_mask, halves_differ, picture  # noqa: E402

failed = 0


def check(cond, what, detail=""):
    global failed
    failed += not cond
    print(f"{'ok  ' if cond else 'FAIL'} {what}" + (f"  [{detail}]" if detail and not cond else ""))


def main():
    with Daemon() as d:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key="unused", max_retries=0)
        print(f"openai {openai.__version__} against sdxld on port {d.port}")
        r = client.images.generate(prompt="a red cube", size="64x64", response_format="b64_json", n=2)
        check(len(r.data) == 2 and all(png_info(base64.b64decode(x.b64_json)) == (64, 64) for x in r.data)
              and isinstance(r.created, int), "b64_json, n 2: two 64x64 PNGs and created")
        check(r.usage is not None and r.usage.total_tokens == 0, "usage parsed (all zero)", r.usage)
        r = client.images.generate(model="dall-e-3", prompt="a red cube", size="64x64", response_format="url",
                                   quality="hd", style="vivid", user="someone")
        body = urllib.request.urlopen(r.data[0].url, timeout=60).read()
        check(png_info(body) == (64, 64), "dall-e-3 style (url, quality hd, style vivid, user): the URL serves the PNG",
              r.data[0].url)
        for fmt, info in (("jpeg", lambda b: (jpeg_info(b) or {}).get("size")), ("webp", webp_info)):
            r = client.images.generate(model="gpt-image-1", prompt="a red cube", size="auto", quality="high",
                                       output_format=fmt, output_compression=80)
            check(info(base64.b64decode(r.data[0].b64_json)) == (64, 64) and r.output_format == fmt and r.size == "64x64",
                  f"gpt-image-1 style ({fmt}, output_compression 80, size auto, quality high): a 64x64 {fmt}")
        try:
            client.images.generate(prompt="a red cube", quality="ultra")
            check(False, "quality 'ultra' raises BadRequestError")
        except openai.BadRequestError as e:
            check(e.status_code == 400 and e.param == "quality" and e.code == "invalid_argument"
                  and e.type == "invalid_request_error", "quality 'ultra' raises BadRequestError with param quality",
                  (e.param, e.code, e.type))
        try:
            client.images.generate(prompt="a red cube", size="100x100")
            check(False, "size 100x100 raises BadRequestError")
        except openai.BadRequestError as e:
            check(e.param == "size" and "multiple" in str(e), "size 100x100 raises BadRequestError naming size", str(e))
        check_edit(client)
    sys.exit(1 if failed else 0)


def check_edit(client):
    r = client.images.edit(image=("in.png", picture(), "image/png"), prompt="a red circle", size="64x64",
                           response_format="b64_json")
    check(png_info(base64.b64decode(r.data[0].b64_json)) == (64, 64), "images.edit with an image: a 64x64 PNG")
    r = client.images.edit(image=("in.png", picture(), "image/png"), mask=("mask.png", alpha_left_mask(), "image/png"),
                           prompt="a red circle", n=2, response_format="b64_json")
    px = [png_rgb(base64.b64decode(x.b64_json))[2] for x in r.data]
    left, right = halves_differ(*px) if len(px) == 2 else (0, -1)
    check(len(px) == 2 and right == 0 and left > 1, "images.edit with an image and a mask, n 2: the opaque half "
          f"kept in both (difference {right}), the transparent half edited ({left:.1f})")
    try:
        client.images.edit(image=("in.png", picture(), "image/png"), mask=("m.png", alpha_left_mask(32, 32), "image/png"),
                           prompt="x")
        check(False, "a mask of another size raises BadRequestError")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.param == "mask", "a mask of another size raises BadRequestError with "
              "param mask", (e.param, str(e)))


if __name__ == "__main__":
    main()

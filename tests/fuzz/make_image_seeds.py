#!/usr/bin/env python3
"""tests/fuzz/make_image_seeds.py — write the seed corpus of the image harness
(tests/fuzz/corpus/image): small PNG, JPEG and WebP files in the variants uploads come in.
Needs Pillow (run by hand in a venv: python3 -m venv V && V/bin/pip install pillow); the
files it writes are committed, so CI never needs it."""
import io
import os

from PIL import Image, PngImagePlugin

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "image")


def picture(mode, w=13, h=9):
    im = Image.new("RGB", (w, h))
    im.putdata([((x * 19) % 256, (y * 29) % 256, (x * y * 7) % 256) for y in range(h) for x in range(w)])
    if mode == "RGBA":
        im.putalpha(Image.linear_gradient("L").resize((w, h)))
        return im
    return im.convert(mode)


def save(name, im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b.getvalue())


def main():
    os.makedirs(OUT, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a red circle\nSteps: 4, Seed: 7")
    save("rgb.png", picture("RGB"), "PNG", pnginfo=info)
    save("rgba.png", picture("RGBA"), "PNG")
    save("gray.png", picture("L"), "PNG")
    save("gray-alpha.png", picture("LA"), "PNG")
    save("palette.png", picture("P"), "PNG", transparency=3)
    save("interlaced.png", picture("RGB"), "PNG", interlace=1)
    save("sixteen-bit.png", picture("I;16"), "PNG")
    save("one-bit.png", picture("1"), "PNG")
    save("baseline.jpg", picture("RGB"), "JPEG", quality=80)
    save("progressive.jpg", picture("RGB", 24, 17), "JPEG", progressive=True, quality=60)
    save("gray.jpg", picture("L"), "JPEG")
    save("cmyk.jpg", picture("CMYK"), "JPEG")
    save("lossy.webp", picture("RGB"), "WEBP", quality=50)
    save("lossy-alpha.webp", picture("RGBA"), "WEBP", quality=50)
    save("lossless.webp", picture("RGBA"), "WEBP", lossless=True)


if __name__ == "__main__":
    main()

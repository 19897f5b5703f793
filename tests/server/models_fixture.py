"""models_fixture.py — a models_dir of small models for the models-by-name tests
(test_models.py) and the switching load run (tests/bench/models_switch.py).

make_models(root, bin) fills root/models with:
  tiny-a             the tiny golden model (tests/data/tiny-sdxl-a) as a diffusers folder
  tiny-b             the same with its UNet weights scaled by 0.9 (other pixels)
  tiny.safetensors   tiny-a as one original-layout (SGM) file, f32 (`sdxld convert`)
  gen.safetensors    tiny-a's UNet alone (a UNet-only generator)
  loras/style.safetensors   the tiny model's kohya LoRA fixture
  broken             a diffusers folder whose unet/ holds the VAE's weights: its headers
                     parse, so it is listed as a model, but it does not load
and hostile entries, each listed as an error (or skipped) and never followed:
  corrupt.safetensors     a header length larger than the file
  truncated.safetensors   the first half of tiny.safetensors
  escape.safetensors      a symbolic link to a loadable copy of tiny.safetensors outside
  alias                   a symbolic link to tiny-a (inside: still not followed)
  pipe.safetensors        a FIFO (opening it must not hang)
  notes                   a folder without model_index.json
  .partial.safetensors    a hidden file (skipped)
  unreadable.safetensors  mode 000 (only when not running as root)
Python standard library only.
"""
import json
import os
import shutil
import struct
import subprocess

from harness import BIN, MODEL

WHOLE = {"tiny-a": "diffusers", "tiny-b": "diffusers", "tiny.safetensors": "checkpoint", "broken": "diffusers"}
KINDS = dict(WHOLE, **{"gen.safetensors": "unet", "loras/style.safetensors": "lora", "corrupt.safetensors": "error",
                       "truncated.safetensors": "error", "escape.safetensors": "error", "alias": "error",
                       "pipe.safetensors": "error", "notes": "error"})


def scaled_copy(src, dst, factor):
    """A copy of a F16/F32 safetensors file with every tensor multiplied by factor."""
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


def tree_bytes(path):
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs)


def make_models(root, binary=BIN):
    """Build root/models (above); returns its path."""
    md = os.path.join(root, "models")
    os.makedirs(os.path.join(md, "loras"))
    skip = shutil.ignore_patterns("dmd2", "lora", "golden*")
    a = os.path.join(md, "tiny-a")
    shutil.copytree(MODEL, a, ignore=skip)
    shutil.copytree(a, os.path.join(md, "tiny-b"))
    unet = os.path.join("unet", "diffusion_pytorch_model.safetensors")
    scaled_copy(os.path.join(a, unet), os.path.join(md, "tiny-b", unet), 0.9)
    single = os.path.join(md, "tiny.safetensors")
    subprocess.run([binary, "convert", "--model", a, "--to", "single-file", "--out", single, "--dtype", "f32"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.copy(os.path.join(a, unet), os.path.join(md, "gen.safetensors"))
    shutil.copy(os.path.join(MODEL, "lora", "lora_kohya.safetensors"), os.path.join(md, "loras", "style.safetensors"))
    shutil.copytree(a, os.path.join(md, "broken"))
    shutil.copy(os.path.join(a, "vae", "diffusion_pytorch_model.safetensors"), os.path.join(md, "broken", unet))
    with open(os.path.join(md, "corrupt.safetensors"), "wb") as f:
        f.write((1 << 40).to_bytes(8, "little") + b"{}" * 100)
    with open(single, "rb") as f:
        raw = f.read()
    with open(os.path.join(md, "truncated.safetensors"), "wb") as f:
        f.write(raw[:len(raw) // 2])
    outside = os.path.join(root, "outside.safetensors")
    shutil.copy(single, outside)
    os.symlink(outside, os.path.join(md, "escape.safetensors"))
    os.symlink("tiny-a", os.path.join(md, "alias"))
    os.mkfifo(os.path.join(md, "pipe.safetensors"))
    os.makedirs(os.path.join(md, "notes"))
    with open(os.path.join(md, "notes", "README"), "w") as f:
        f.write("not a model\n")
    shutil.copy(os.path.join(md, "gen.safetensors"), os.path.join(md, ".partial.safetensors"))
    if os.geteuid() != 0:
        p = os.path.join(md, "unreadable.safetensors")
        shutil.copy(os.path.join(md, "gen.safetensors"), p)
        os.chmod(p, 0)
    return md

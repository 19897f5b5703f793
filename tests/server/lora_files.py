"""lora_files.py — LoRA adapter files for the tiny model's UNet, written with the standard
library (kohya keys, random values), for test_lora.py and tests/bench/lora_switch.py."""
import json
import os
import random
import struct

from harness import MODEL

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
           "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def unet_shapes(model=MODEL):
    path = os.path.join(model, "unet", "diffusion_pytorch_model.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    return {k: v["shape"] for k, v in h.items() if k != "__metadata__"}


def write_safetensors(path, tensors):
    """tensors: {name: (shape, [floats])}, written as F32."""
    header, blobs, off = {}, [], 0
    for name, (shape, vals) in tensors.items():
        b = struct.pack(f"<{len(vals)}f", *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_lora(path, seed, rank=2, bscale=0.05, model=MODEL):
    """A kohya adapter on every target module of the UNet, A and B random."""
    rnd, t = random.Random(seed), {}
    for key, shape in unet_shapes(model).items():
        if not key.endswith(".weight") or len(shape) not in (2, 4):
            continue
        mod = key[:-len(".weight")]
        if not any(mod == s or mod.endswith("." + s) for s in TARGETS):
            continue
        k = "lora_unet_" + mod.replace(".", "_")
        K = 1
        for d in shape[1:]:
            K *= d
        a_shape = [rank] + shape[1:]
        b_shape = [shape[0], rank] + ([1, 1] if len(shape) == 4 else [])
        t[k + ".lora_down.weight"] = (a_shape, [rnd.gauss(0, K ** -0.5) for _ in range(rank * K)])
        t[k + ".lora_up.weight"] = (b_shape, [rnd.gauss(0, bscale) for _ in range(shape[0] * rank)])
        t[k + ".alpha"] = ([], [float(rank)])
    write_safetensors(path, t)

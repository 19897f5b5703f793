#!/usr/bin/env python3
"""Check a single file written by `sdxld convert --to single-file` with diffusers: load it
with StableDiffusionXLPipeline.from_single_file (configs from the diffusers folder it was
made from, nothing downloaded) and compare every tensor of every component with that
folder's.  Not run in CI (it needs torch + diffusers); run by hand:

    build/server/sdxld convert --model tests/data/tiny-sdxl-a --to single-file --out /tmp/tiny-sgm.safetensors
    /tmp/venvt/bin/python tests/ref/check_single_file.py /tmp/tiny-sgm.safetensors tests/data/tiny-sdxl-a

Exit status 0 and one line per component when every tensor is equal (after casting the
folder to the file's dtype); otherwise the first differing key.
"""
import sys

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors import safe_open


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, folder = sys.argv[1], sys.argv[2]
    with safe_open(path, "pt") as f:
        dtype = f.get_tensor(next(iter(f.keys()))).dtype
    ref = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    got = StableDiffusionXLPipeline.from_single_file(path, config=folder, local_files_only=True, torch_dtype=dtype)
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(ref, comp).state_dict(), getattr(got, comp).state_dict()
        a = {k: v for k, v in a.items() if not k.endswith("position_ids")}
        missing = sorted(set(a) - set(b))
        if missing:
            sys.exit(f"{comp}: from_single_file lacks {missing[:3]}")
        for k, v in a.items():
            if not torch.equal(v, b[k]):
                sys.exit(f"{comp}: {k} differs (max |d| {float((v.float() - b[k].float()).abs().max()):.3g})")
        print(f"{comp}: {len(a)} tensors equal ({dtype})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write tests/data/tiny-sdxl-a/lora/: a LoRA on the tiny UNet in DMD2's export format and
the UNet output the reference computes with it, for tests/test_lora.c.

The adapters are peft's (what DMD2 trains, docs/dmd2.md §9.6): LoraConfig(r=2, alpha=4,
DMD2's target modules) added to diffusers' UNet2DConditionModel; lora_A random (peft's
default init), lora_B random too (peft starts it at zero, which would test nothing).  The
file is written the way DMD2's main/sdxl/extract_lora_module.py names things (kohya
style: "lora_unet_<module path, '.' -> '_'>.lora_down.weight" / ".lora_up.weight" /
".alpha"), stored as fp16; the reference forward uses those fp16-rounded values and runs
peft's unmerged LoRA layers (W0 x + s * B(A x)), so the check covers both the file
format and the merge.  Inputs: the golden unet_x / unet_t / prompt_embeds /
pooled_embeds / time_ids.

    python3 -m venv /tmp/venvt && /tmp/venvt/bin/pip install torch diffusers peft safetensors
    /tmp/venvt/bin/python tests/ref/make_lora_fixture.py
"""
import json
import os

import diffusers
import peft
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "data", "tiny-sdxl-a")
OUT = os.path.join(MODEL, "lora")
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
           "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]
RANK, ALPHA = 2, 4.0


def main():
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(MODEL, "unet"), torch_dtype=torch.float32).eval()
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights=True, target_modules=TARGETS))
    tensors = {}
    with torch.no_grad():
        for name, mod in unet.named_modules():
            if not isinstance(mod, peft.tuners.lora.LoraLayer):
                continue
            a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
            b.copy_(torch.randn_like(b) * 0.05)
            a.copy_(a.half().float())          # the reference sees what the file holds
            b.copy_(b.half().float())
            key = "lora_unet_" + name.replace(".", "_")
            tensors[key + ".lora_down.weight"] = a.half().contiguous()
            tensors[key + ".lora_up.weight"] = b.half().contiguous()
            tensors[key + ".alpha"] = torch.tensor(ALPHA)
    g = load_file(os.path.join(MODEL, "golden.safetensors"))
    n = g["unet_x"].shape[0]
    with torch.no_grad():
        out = unet(g["unet_x"], g["unet_t"], encoder_hidden_states=g["prompt_embeds"][:n],
                   added_cond_kwargs={"text_embeds": g["pooled_embeds"][:n], "time_ids": g["time_ids"][:n]}).sample
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "lora_kohya.safetensors"))
    save_file({"unet_out_lora": out.contiguous()}, os.path.join(OUT, "golden_lora.safetensors"))
    with open(os.path.join(OUT, "lora.json"), "w") as f:
        json.dump({"rank": RANK, "alpha": ALPHA, "modules": len(tensors) // 3, "targets": TARGETS,
                   "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__},
                  f, indent=1)
    print(f"{len(tensors) // 3} adapted modules, unet_out_lora {tuple(out.shape)}, "
          f"max |out - unet_out| {float((out - g['unet_out']).abs().max()):.4g}")


if __name__ == "__main__":
    main()

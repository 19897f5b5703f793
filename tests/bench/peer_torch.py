"""peer_torch.py — the PyTorch side of tests/bench/peer_cpu.sh: diffusers' SDXL components
on the CPU in fp32, timed stage by stage on the same shapes as `sdxld bench`.

Usage: python peer_torch.py MODEL_DIR WIDTH HEIGHT THREADS
Prints one JSON line: {"text": s, "unet": s, "vae": s, "e2e": s, "rss_mib": n} (best of
one warm-up and one timed run per stage; e2e = text + 4 UNet steps + decode).
Run by hand in its own virtual environment (torch, diffusers, transformers), never in CI.
"""
import json
import resource
import sys
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"


def timed(fn, runs=2):
    best = None
    for _ in range(runs):   # the first run warms up
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, out


def main():
    model, width, height, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok1 = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer_2")
    te1 = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", torch_dtype=torch.float32).eval()
    te2 = CLIPTextModelWithProjection.from_pretrained(model, subfolder="text_encoder_2",
                                                      torch_dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=torch.float32).eval()
    h, w = height // 8, width // 8

    def encode():
        ids1 = tok1(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        ids2 = tok2(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        o1 = te1(ids1, output_hidden_states=True)
        o2 = te2(ids2, output_hidden_states=True)
        ctx = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1)
        return ctx, o2.text_embeds

    x = torch.randn(1, unet.config.in_channels, h, w)
    tids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)

    def step(ctx, pooled, t=999.0):
        return unet(x, torch.tensor([t]), encoder_hidden_states=ctx,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": tids}).sample

    def decode(z):
        return vae.decode(z / vae.config.scaling_factor).sample

    def e2e():
        ctx, pooled = encode()
        z = x
        for t in (999.0, 749.0, 499.0, 249.0):
            z = step(ctx, pooled, t)
        return decode(z)

    res = {}
    with torch.inference_mode():
        res["text"], (ctx, pooled) = timed(encode)
        res["unet"], _ = timed(lambda: step(ctx, pooled))
        res["vae"], _ = timed(lambda: decode(x))
        res["e2e"], _ = timed(e2e, runs=1)
    res["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    res["torch"] = torch.__version__
    print(json.dumps(res))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write tests/data/tiny-sdxl-a/dmd2/: three DMD2 iterations of the tiny golden model in
PyTorch, with every random draw fixed, for tests/test_dmd2_ref.c (the way llm.c's
test_gpt2.c pins its losses to a PyTorch run).

Written from the DMD2 paper (arXiv 2405.14867), the DMD2 repository (tianweiy/DMD2 @
8d8fa55: main/train_sd.py, main/sd_guidance.py, main/sd_unified_model.py,
main/sd_unet_forward.py) and docs/dmd2.md, not from src/train/dmd2.c:

  real score  the teacher UNet (diffusers UNet2DConditionModel), frozen; CFG scale G with
              all-zero ctx and pooled embeddings as the unconditional input (§5)
  generator   a copy of the teacher; AdamW; updated on iterations i with i % TTUR == 0 (§1, §8.1)
  fake score  a copy of the teacher; AdamW together with the GAN head, one joint clip (§1.8)
  GAN head    on the fake UNet's mid-block output (DMD2's classify_forward: embeddings,
              conv_in, down blocks, mid block), [conv k4 s2 p1 → GN → SiLU] down to 4×4,
              conv k4 s4 → GN → SiLU, conv 1×1 → a logit (§7)
  iteration   backward simulation with k (§8.3); x0_gen from the generator at t_k; on
              generator iterations L_DM (§5) + GAN_G·L_GAN_G (§7), clip, AdamW; then on the
              detached x0_gen the fake denoising loss (§6) + GAN_D·L_GAN_D (§7), clip, AdamW

Every draw the algorithm makes (the batch's cache rows, k, the generator input noise, the
backward-simulation noises, the DM / GAN-G / fake / GAN-D noises and timesteps, the real
rows of the GAN batch) and the head's initial weights are drawn here once, stored in the
fixture and fed to both sides.  The "dataset" is a cache of K rows: random latents (the
VAE's latents × scaling factor, as DMD2 stores them) and the golden prompt_embeds /
pooled_embeds (reference text-encoder outputs) as the captions' conditioning.

Choices, and where they come from:
  * Precision: the reference runs in float64 (inputs and initial weights are fp32 values,
    the UNet's fp16 file values), so it is the exact answer for sdxld's fp32 CPU path.
    DMD2 runs the real UNet and several passes in bf16 (docs/dmd2.md §9.4); sdxld documents fp32
    on the CPU backend, and a bf16 reference could not hold anything to 1e-4.
  * GroupNorm groups of the head: sdxld's gan_head.c (32 as DMD2, but never fewer than 8
    channels per group: 12 groups for the tiny model's 96 channels).
  * Weight decay: sdxld's optim.c exempts 1-D parameters (norms, biases); DMD2's AdamW
    decays every parameter (train_sd.py).  DECAY_1D below follows sdxld; at DMD2's real
    lr (5e-7) the difference is 5e-9·|w| per step.
  * LR schedule: constant (warmup 0).  DMD2's constant_with_warmup starts at lr 0 and is
    stepped every iteration for both optimisers; sdxld's warmup counts each optimiser's own
    steps from 1/warmup: the two differ during warmup, so the fixture avoids it.
  * Gradient clipping: torch.nn.utils.clip_grad_norm_ (max_norm / (norm + 1e-6)), as DMD2
    via accelerate; sdxld uses max_norm / norm: 1e-7 relative, far below the tolerances.
  * Schedule: ᾱ from the scheduler config in float64 (docs/sdxl.md §6.1).
  * Test values, not DMD2's: the GAN weights (0.3, 0.7: DMD2's 5e-3 / 1e-2 would leave the
    GAN gradients below what the comparison resolves; distinct, so a swap shows), the
    learning rates (1e-4 / 2e-4, distinct) and the clip (0.3: the generator's norm is
    clipped in iteration 1 but not 3, the guidance model's always), ttur 2, batch 2, a
    256² image (32² latent, 8² mid block: the head has one k4 s2 stage and the k4 s4 one).

    python3 -m venv /tmp/venvt && /tmp/venvt/bin/pip install torch diffusers safetensors
    /tmp/venvt/bin/python tests/ref/make_dmd2_fixture.py
"""
import copy
import json
import os

import diffusers
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "data", "tiny-sdxl-a")
OUT = os.path.join(MODEL, "dmd2")
DT = torch.float64

# the run (the C test reads these back from the fixture's hp.* scalars)
ITERS, TTUR, B, K, RES = 3, 2, 2, 5, 256           # RES: image size; latent RES/8, mid block RES/32
TIMESTEPS = [999, 749, 499, 249]
LR_G, LR_F, GUIDANCE, GAN_G, GAN_D, CLIP = 1e-4, 2e-4, 8.0, 0.3, 0.7, 0.3
DM_MIN_T, DM_MAX_T = 20, 980
WD, BETAS, EPS = 0.01, (0.9, 0.999), 1e-8
DECAY_1D = False
KS = [2, 0, 3]                                     # backward-simulation k per iteration
# weights compared after the last iteration (besides the whole head)
UNET_TENSORS = ["conv_in.weight", "time_embedding.linear_1.weight", "add_embedding.linear_2.bias",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                "mid_block.resnets.0.conv1.weight", "mid_block.attentions.0.norm.weight",
                "up_blocks.0.resnets.2.conv_shortcut.weight", "up_blocks.2.resnets.0.conv2.bias",
                "conv_norm_out.weight", "conv_out.weight"]


def alphas_cumprod():
    c = json.load(open(os.path.join(MODEL, "scheduler", "scheduler_config.json")))
    assert c["beta_schedule"] == "scaled_linear"
    n = c["num_train_timesteps"]
    betas = torch.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, n, dtype=DT) ** 2
    return torch.cumprod(1 - betas, 0)


AC = alphas_cumprod()


def sc(t):   # per-sample √ᾱ, √(1−ᾱ) as [N,1,1,1]
    a = AC[t].view(-1, 1, 1, 1)
    return a.sqrt(), (1 - a).sqrt()


def add_noise(x0, eps, t):
    a, s = sc(t)
    return a * x0 + s * eps


def to_x0(xt, eps, t):
    a, s = sc(t)
    return (xt - s * eps) / a


def groups_for(c):   # sdxld's gan_head.c rule (see the docstring)
    g = 32
    while g > 1 and (c % g or c // g < 8):
        g -= 1
    return g


class Stage(torch.nn.Module):
    def __init__(self, c, k, s, p, norm=True):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c if norm else 1, k, s, p)
        if norm:
            self.norm = torch.nn.GroupNorm(groups_for(c), c)

    def forward(self, x):
        x = self.conv(x)
        return F.silu(self.norm(x)) if hasattr(self, "norm") else x


class Head(torch.nn.Module):
    """DMD2's cls_pred_branch (docs/dmd2.md §7), named as sdxld's weight table names it."""

    def __init__(self, c, s):
        super().__init__()
        self.down = torch.nn.ModuleList()
        while s > 4:
            self.down.append(Stage(c, 4, 2, 1))
            s //= 2
        self.final = Stage(c, s, s, 0)
        self.out = Stage(c, 1, 1, 0, norm=False)

    def forward(self, x):
        for m in self.down:
            x = m(x)
        return self.out(self.final(x)).flatten()


def cond(unet, ctx, pool, n):
    tid = torch.tensor([RES, RES, 0, 0, RES, RES], dtype=DT).repeat(n, 1)
    return dict(encoder_hidden_states=ctx, added_cond_kwargs={"text_embeds": pool, "time_ids": tid})


def eps_pred(unet, x, t, ctx, pool):
    return unet(x, t, **cond(unet, ctx, pool, x.shape[0])).sample


def mid_features(unet, x, t, ctx, pool):
    """DMD2's classify_forward up to the mid block (its last output)."""
    c = cond(unet, ctx, pool, x.shape[0])
    emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=t), None)
    emb = emb + unet.get_aug_embed(emb=emb, encoder_hidden_states=ctx, added_cond_kwargs=c["added_cond_kwargs"])
    h = unet.conv_in(x)
    for blk in unet.down_blocks:
        if getattr(blk, "has_cross_attention", False):
            h, _ = blk(hidden_states=h, temb=emb, encoder_hidden_states=ctx)
        else:
            h, _ = blk(hidden_states=h, temb=emb)
    return unet.mid_block(h, emb, encoder_hidden_states=ctx)


def adamw(params, lr):
    decay = [p for p in params if p.ndim >= 2 or DECAY_1D]
    rest = [p for p in params if not (p.ndim >= 2 or DECAY_1D)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=BETAS, eps=EPS)


def make_draws(gen, C, h):
    """Every random draw of the run, as fp32 values (what both sides are fed)."""
    def normal(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    def ints(lo, hi, n):   # integers in [lo, hi]
        return torch.randint(lo, hi + 1, (n,), generator=gen, dtype=torch.int64)

    d = {}
    for n in range(1, ITERS + 1):
        p, k = f"it{n}.", KS[n - 1]
        d[p + "batch"] = ints(0, K - 1, B)
        d[p + "k"] = torch.tensor([k], dtype=torch.int64)
        d[p + "input_noise"] = normal(B, C, h, h)
        if k > 0:
            d[p + "sim_start"] = normal(B, C, h, h)
        for j in range(k - 1):
            d[p + f"sim_renoise{j}"] = normal(B, C, h, h)
        if (n - 1) % TTUR == 0:
            d[p + "dm_noise"], d[p + "dm_t"] = normal(B, C, h, h), ints(DM_MIN_T, DM_MAX_T, B)
            d[p + "gan_g_noise"], d[p + "gan_g_t"] = normal(B, C, h, h), ints(0, 999, B)
        d[p + "fake_noise"], d[p + "fake_t"] = normal(B, C, h, h), ints(0, 999, B)
        d[p + "gan_d_noise"], d[p + "gan_d_rows"] = normal(2 * B, C, h, h), ints(0, K - 1, B)
        d[p + "gan_d_t"] = ints(0, 999, 2 * B)
    return d


def gen_input(gen_unet, d, p, ctx, pool):
    """Backward simulation (§8.3) under no_grad: the generator input at t_k."""
    k = int(d[p + "k"])
    noise = d[p + "input_noise"].to(DT)
    if k == 0:
        return noise, TIMESTEPS[0]
    x = d[p + "sim_start"].to(DT)
    for s in range(k):
        t = torch.full((B,), TIMESTEPS[s])
        x0 = to_x0(x, eps_pred(gen_unet, x, t, ctx, pool), t)
        if s + 1 < k:
            x = add_noise(x0, d[p + f"sim_renoise{s}"].to(DT), torch.full((B,), TIMESTEPS[s + 1]))
    return add_noise(x0, noise, torch.full((B,), TIMESTEPS[k])), TIMESTEPS[k]


def dm_grad(real, fake, x0, noise, t, ctx, pool):
    """§5: g = (x0_fake − x0_real) / mean|x − x0_real| per sample, nan_to_num."""
    with torch.no_grad():
        xt = add_noise(x0, noise, t)
        x0_fake = to_x0(xt, eps_pred(fake, xt, t, ctx, pool), t)
        e = eps_pred(real, torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([ctx, torch.zeros_like(ctx)]),
                     torch.cat([pool, torch.zeros_like(pool)]))
        e_c, e_u = e.chunk(2)
        x0_real = to_x0(xt, e_u + GUIDANCE * (e_c - e_u), t)
        w = (x0 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
        return torch.nan_to_num((x0_fake - x0_real) / w)


def iteration(n, nets, opts, cache, d, out):
    real, gen_u, fake, head = nets
    lat, ctx_all, pool_all = cache
    p = f"it{n}."
    rows = d[p + "batch"]
    ctx, pool = ctx_all[rows], pool_all[rows]
    with torch.no_grad():
        xt, tk = gen_input(gen_u, d, p, ctx, pool)
    tk = torch.full((B,), tk)
    if (n - 1) % TTUR == 0:   # generator iteration
        x0 = to_x0(xt, eps_pred(gen_u, xt, tk, ctx, pool), tk)
        g = dm_grad(real, fake, x0.detach(), d[p + "dm_noise"].to(DT), d[p + "dm_t"], ctx, pool)
        loss_dm = 0.5 * F.mse_loss(x0, (x0 - g).detach())
        for m in (fake, head):
            m.requires_grad_(False)
        tg = d[p + "gan_g_t"]
        logit = head(mid_features(fake, add_noise(x0, d[p + "gan_g_noise"].to(DT), tg), tg, ctx, pool))
        loss_gan_g = F.softplus(-logit).mean()
        for m in (fake, head):
            m.requires_grad_(True)
        (out[p + "dm_grad"],) = torch.autograd.grad(loss_dm, x0, retain_graph=True)
        (out[p + "dx0"],) = torch.autograd.grad(loss_dm + GAN_G * loss_gan_g, x0, retain_graph=True)
        opts[0].zero_grad()
        (loss_dm + GAN_G * loss_gan_g).backward()
        out[p + "grad_norm_generator"] = torch.nn.utils.clip_grad_norm_(list(gen_u.parameters()), CLIP)
        opts[0].step()
        out[p + "loss_dm"], out[p + "loss_gan_g"] = loss_dm.detach(), loss_gan_g.detach()
        x0 = x0.detach()
    else:
        with torch.no_grad():
            x0 = to_x0(xt, eps_pred(gen_u, xt, tk, ctx, pool), tk)
    # the guidance model: fake denoising (§6) + GAN_D (§7) on the detached x0_gen
    opts[1].zero_grad()
    z, tf = d[p + "fake_noise"].to(DT), d[p + "fake_t"]
    loss_fake = torch.mean((eps_pred(fake, add_noise(x0, z, tf), tf, ctx, pool) - z) ** 2)
    rr, zd, td = d[p + "gan_d_rows"], d[p + "gan_d_noise"].to(DT), d[p + "gan_d_t"]
    l_real = head(mid_features(fake, add_noise(lat[rr], zd[:B], td[:B]), td[:B], ctx_all[rr], pool_all[rr]))
    l_fake = head(mid_features(fake, add_noise(x0, zd[B:], td[B:]), td[B:], ctx, pool))
    loss_gan_d = F.softplus(l_fake).mean() + F.softplus(-l_real).mean()
    (loss_fake + GAN_D * loss_gan_d).backward()
    out[p + "grad_norm_fake"] = torch.nn.utils.clip_grad_norm_(list(fake.parameters()) + list(head.parameters()), CLIP)
    opts[1].step()
    out[p + "loss_fake"], out[p + "loss_gan_d"] = loss_fake.detach(), loss_gan_d.detach()
    print(f"it{n}: " + " ".join(f"{k[len(p):]} {float(v):.6g}" for k, v in out.items()
                                 if k.startswith(p) and v.numel() == 1))


def main():
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(2024)
    real = UNet2DConditionModel.from_pretrained(os.path.join(MODEL, "unet"), torch_dtype=DT).eval()
    real.requires_grad_(False)
    gen_u, fake = copy.deepcopy(real).requires_grad_(True), copy.deepcopy(real).requires_grad_(True)
    C, h = real.config.in_channels, RES // 8
    mid_c, mid_s = real.config.block_out_channels[-1], h >> (len(real.config.block_out_channels) - 1)
    torch.manual_seed(0)
    head = Head(mid_c, mid_s)                      # PyTorch's default init, fp32 values
    head_init = {k: v.detach().clone().contiguous() for k, v in head.state_dict().items()}
    head = head.to(DT)
    g = load_file(os.path.join(MODEL, "golden.safetensors"))
    lat = torch.randn(K, C, h, h, generator=gen, dtype=torch.float32)
    ctx, pool = g["prompt_embeds"][:K].contiguous(), g["pooled_embeds"][:K].contiguous()
    d = make_draws(gen, C, h)
    cache = (lat.to(DT), ctx.to(DT), pool.to(DT))
    opts = (adamw(list(gen_u.parameters()), LR_G), adamw(list(fake.parameters()) + list(head.parameters()), LR_F))
    out = {}
    for n in range(1, ITERS + 1):
        iteration(n, (real, gen_u, fake, head), opts, cache, d, out)
    last_gen = max(n for n in range(1, ITERS + 1) if (n - 1) % TTUR == 0)
    exp = {k: v.reshape(-1).float() if v.numel() == 1 else v.float().contiguous() for k, v in out.items()
           if v.numel() == 1 or k.startswith(f"it{last_gen}.")}
    for k, v in head.state_dict().items():
        exp["after.head." + k] = v.float().contiguous()
    gs, fs = gen_u.state_dict(), fake.state_dict()
    for k in UNET_TENSORS:
        exp["after.generator." + k] = gs[k].float().contiguous()
        exp["after.fake." + k] = fs[k].float().contiguous()
    hp = dict(iters=ITERS, ttur=TTUR, batch=B, cache=K, resolution=RES, lr_generator=LR_G, lr_fake=LR_F,
              guidance=GUIDANCE, gan_weight_g=GAN_G, gan_weight_d=GAN_D, clip=CLIP, dm_min_t=DM_MIN_T,
              dm_max_t=DM_MAX_T, last_generator_iteration=last_gen)
    for k, v in hp.items():
        exp["hp." + k] = torch.tensor([float(v)], dtype=torch.float32)
    exp["cache.latents"], exp["cache.ctx"], exp["cache.pooled"] = lat, ctx, pool
    exp.update({k: v.contiguous() for k, v in d.items()})
    os.makedirs(OUT, exist_ok=True)
    save_file(head_init, os.path.join(OUT, "head_init.safetensors"))
    save_file(exp, os.path.join(OUT, "dmd2_ref.safetensors"))   # all F32 (sdxld reads no F64) or I64
    for f in ("head_init.safetensors", "dmd2_ref.safetensors"):
        os.chmod(os.path.join(OUT, f), 0o644)
    with open(os.path.join(OUT, "dmd2_ref.json"), "w") as f:
        json.dump({"hp": hp, "timesteps": TIMESTEPS, "k": KS, "decay_1d": DECAY_1D, "precision": "float64",
                   "torch": torch.__version__, "diffusers": diffusers.__version__}, f, indent=1)
    print(f"{len(exp)} tensors; head {sum(v.numel() for v in head_init.values())} parameters")


if __name__ == "__main__":
    main()

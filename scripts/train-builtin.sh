#!/usr/bin/env bash
# train-builtin.sh — make sdxld's small built-in model from scratch on the CPU:
#   1. a fresh model folder of the shapes-small configs (sdxld init; text encoders stay
#      frozen at their random initialisation: fixed random features of the token ids),
#   2. train the VAE on the shapes dataset (64×64 images -> 16×16×4 latents),
#      (norm_num_groups 8, not 32: with 32 groups over 32 channels GroupNorm is an
#      instance norm that discards each channel's absolute level, and the first VAE
#      trained so could not tell the shapes' colours apart),
#   3. train the teacher UNet on VAE latents with CFG dropout, an EMA of the weights (what
#      is exported) and P2 loss weighting (the coarse, high-noise steps that decide colour
#      and layout count more; docs/benchmarks.md has the record of the shipped teacher),
#   4. assemble OUT/ (diffusers layout) with the trained VAE and UNet.
# Takes 49 minutes on a 2-core box (docs/benchmarks.md: VAE 11 min, teacher 38 min).
# Usage: scripts/train-builtin.sh OUT [VAE_STEPS] [TEACHER_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: train-builtin.sh OUT [VAE_STEPS] [TEACHER_STEPS]}
VAE_STEPS=${2:-1200} TEACHER_STEPS=${3:-9000}
BIN=${SDXLD:-build/server/sdxld}
WORK=$OUT.work
mkdir -p "$WORK"
t0=$(date +%s)
"$BIN" init --from tests/data/tiny-sdxl-a --config conf/models/shapes-small/unet/config.json \
    --vae-config conf/models/shapes-small/vae/config.json --out "$WORK/init" --seed 1
"$BIN" train vae --model "$WORK/init" --out "$WORK/vae" --steps "$VAE_STEPS" --batch 8 --resolution 64 \
    --lr 1e-3 --warmup 50 --kl-weight 1e-4 --sample-every 100 --checkpoint-every 100 --log-every 25
t1=$(date +%s)
rm -rf "$WORK/stage2" && cp -r "$WORK/init" "$WORK/stage2"
cp "$WORK/vae/vae/diffusion_pytorch_model.safetensors" "$WORK/vae/vae/config.json" "$WORK/stage2/vae/"   # config: the measured scaling_factor
"$BIN" train teacher --model "$WORK/stage2" --out "$WORK/teacher" --steps "$TEACHER_STEPS" --batch 16 \
    --resolution 64 --lr 3e-4 --warmup 100 --cfg-dropout 0.1 --cache-size 4096 --sample-every 1000 \
    --sample-steps 50 --guidance 4 --checkpoint-every 500 --log-every 50 --ema 0.999 --p2-gamma 1
t2=$(date +%s)
rm -rf "$OUT" && cp -r "$WORK/stage2" "$OUT"
cp "$WORK/teacher/unet/diffusion_pytorch_model.safetensors" "$OUT/unet/"
mkdir -p "$OUT/teacher"   # the teacher a DMD2 run on OUT distils from (docs/training.md)
cp "$WORK/teacher/unet/config.json" "$WORK/teacher/unet/diffusion_pytorch_model.safetensors" "$OUT/teacher/"
echo "train-builtin: vae $((t1 - t0)) s, teacher $((t2 - t1)) s, model in $OUT"

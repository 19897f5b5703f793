#!/usr/bin/env bash
# test_train.sh — the training core end to end on a micro model (seconds): the VAE and
# teacher losses fall, a checkpoint + resume continues bit-identically, a stop leaves a
# final checkpoint, and bad options fail cleanly.  TAP output.
set -u
BIN=${SDXLD_BIN:?} DATA=${SDXLD_TEST_DATA:?}
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT
n=0 fails=0
ok() { n=$((n+1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails+1)); fi; }
# mean loss of the first and last k logged steps
falls() { python3 - "$1" <<'PY'
import re, sys
l = [float(m.group(1)) for m in re.finditer(r"step \d+/\d+ loss ([0-9.]+)", open(sys.argv[1]).read())]
k = max(1, len(l) // 4)
a, b = sum(l[:k]) / k, sum(l[-k:]) / k
print(f"# loss {a:.4f} -> {b:.4f} over {len(l)} logged steps")
sys.exit(0 if len(l) >= 8 and b < 0.8 * a else 1)
PY
}

"$BIN" init --from "$DATA/tiny-sdxl-a" --config "$DATA/configs/unet-micro.json" \
    --vae-config "$DATA/configs/vae-micro.json" --out "$T/m" --seed 3 >/dev/null 2>&1; ok $? "init a micro model"

"$BIN" train-vae --model "$T/m" --out "$T/vae" --resolution 16 --batch 4 --steps 60 --lr 3e-3 --warmup 5 \
    --log-every 1 --sample-every 60 --checkpoint-every 0 2>"$T/vae.log"; ok $? "train-vae runs"
falls "$T/vae.log"; ok $? "VAE reconstruction loss falls"
[ -f "$T/vae/samples/0000060-recon.png" ] && [ -f "$T/vae/vae/diffusion_pytorch_model.safetensors" ]
ok $? "VAE samples and exported weights written"

train() {  # OUT STEPS [extra]
    local out=$1 steps=$2; shift 2
    "$BIN" train-teacher --model "$T/m" --out "$out" --resolution 16 --batch 8 --steps "$steps" --cache-size 8 \
        --lr 2e-3 --warmup 5 --log-every 1 --sample-every 0 --checkpoint-every 3 --seed 5 "$@"
}
train "$T/t" 60 2>"$T/t.log"; ok $? "train-teacher runs"
falls "$T/t.log"; ok $? "teacher denoising loss falls"

# resume: 6 steps straight vs 3 steps, stop, resume to 6 -> identical weights and moments
train "$T/a" 6 2>/dev/null
train "$T/b" 3 2>/dev/null && train "$T/b" 6 --resume 2>"$T/b.log"
grep -q "resumed from" "$T/b.log"; ok $? "resume picks up the latest checkpoint"
cmp -s "$T/a/checkpoint-0000006/weights.safetensors" "$T/b/checkpoint-0000006/weights.safetensors" &&
cmp -s "$T/a/checkpoint-0000006/optim.safetensors" "$T/b/checkpoint-0000006/optim.safetensors"
ok $? "checkpoint + resume continues bit-identically (weights and Adam moments)"
[ "$(cat "$T/b/latest")" = "checkpoint-0000006" ]; ok $? "latest names the newest checkpoint"

# a checkpoint's weights serve as a UNet file
"$BIN" generate --model "$T/m" --unet "$T/a/checkpoint-0000006/weights.safetensors" --prompt "a red circle" \
    --width 16 --height 16 --seed 1 -o "$T/img.png" >/dev/null 2>&1; ok $? "a checkpoint's weights load as --unet"

# bad input
"$BIN" train-teacher --model "$T/m" --out "$T/x" --batch 0 >/dev/null 2>&1; [ $? -eq 2 ]; ok $? "batch 0 rejected"
"$BIN" train-teacher --model "$T/nowhere" --out "$T/x" --steps 1 >/dev/null 2>"$T/err"; [ $? -eq 1 ] && grep -q nowhere "$T/err"
ok $? "missing model folder named"
"$BIN" train-teacher --model "$T/m" --out "$T/fresh" --steps 2 --resume >/dev/null 2>"$T/err"; [ $? -eq 1 ] && grep -q latest "$T/err"
ok $? "--resume without a checkpoint is a clear error"

echo "1..$n"
[ $fails -eq 0 ]

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

# sample grids carry each cell's caption (the PNG's "captions" text chunk, a JSON array
# left to right): from a folder dataset whose captions are known, one non-ASCII (iTXt)
python3 - "$T/cap" <<'PY'
import os, struct, sys, zlib
d = sys.argv[1]; os.makedirs(d)
def png(path, rgb):
    raw = b"".join(b"\0" + bytes(rgb) * 16 for _ in range(16))
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
                          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
caps = ["a red square", "a blue circle", "une étoile jaune"]
for i, c in enumerate(caps):
    png(os.path.join(d, f"{i}.png"), [(200, 30, 30), (30, 30, 200), (240, 220, 40)][i])
open(os.path.join(d, "captions.txt"), "w", encoding="utf-8").write("".join(f"{i}.png\t{c}\n" for i, c in enumerate(caps)))
PY
caps() {  # PNG: print the grid's "captions" (tEXt or iTXt) as compact JSON; exit 1 if it has none
    python3 - "$1" <<'PY'
import json, sys
b = open(sys.argv[1], "rb").read(); i = 8; got = None
while i < len(b):
    n = int.from_bytes(b[i:i + 4], "big"); t = b[i + 4:i + 8]; c = b[i + 8:i + 8 + n]
    if t == b"tEXt" and c.startswith(b"captions\0"): got = c[9:].decode("latin-1")
    if t == b"iTXt" and c.startswith(b"captions\0\0\0"): got = c[11:].split(b"\0", 2)[2].decode("utf-8")
    i += 12 + n
print(json.dumps(json.loads(got), ensure_ascii=False, separators=(",", ":")) if got else "none")
sys.exit(0 if got else 1)
PY
}
"$BIN" train-vae --model "$T/m" --data "$T/cap" --out "$T/cv" --resolution 16 --batch 4 --steps 1 \
    --sample-every 1 --checkpoint-every 0 2>/dev/null && a=$(caps "$T/cv/samples/0000001-input.png") &&
[ "$a" = "$(caps "$T/cv/samples/0000001-recon.png")" ] && python3 -c "
import json, sys; c = json.loads(sys.argv[1]); print('#', c)
sys.exit(0 if len(c) == 4 and set(c) <= {'a red square', 'a blue circle', 'une étoile jaune'} else 1)" "$a"
ok $? "train-vae on a 3-image folder runs to its export; its sample grids carry each cell's caption (inputs and reconstructions alike)"
"$BIN" train-teacher --model "$T/m" --data "$T/cap" --out "$T/ct" --resolution 16 --batch 2 --steps 1 --cache-size 8 \
    --sample-every 1 --sample-steps 2 --checkpoint-every 0 2>/dev/null &&
[ "$(caps "$T/ct/samples/0000001.png")" = '["a red square","a blue circle","une étoile jaune"]' ]
ok $? "teacher sample grid: the prompt of each cell, the first cached captions (UTF-8 intact)"
"$BIN" train dmd2 --teacher "$T/m" --data "$T/cap" --out "$T/cd" --resolution 16 --batch 2 --steps 1 --cache-size 8 \
    --sample-every 1 --checkpoint-every 0 2>/dev/null &&
[ "$(caps "$T/cd/samples/0000001.png")" = '["a red square","a blue circle"]' ]
ok $? "DMD2 sample grid: the prompt of each cell"
caps "$T/vae/samples/0000060-recon.png" | python3 -c "
import json, sys; c = json.loads(sys.stdin.read()); sys.exit(0 if len(c) == 4 and all(c) else 1)"
ok $? "shapes-dataset grids carry their 4 captions too"

train() {  # OUT STEPS [extra]
    local out=$1 steps=$2; shift 2
    "$BIN" train-teacher --model "$T/m" --out "$out" --resolution 16 --batch 8 --steps "$steps" --cache-size 8 \
        --lr 2e-3 --warmup 5 --log-every 1 --sample-every 0 --checkpoint-every 3 --seed 5 "$@"
}
train "$T/t" 60 2>"$T/t.log"; ok $? "train-teacher runs"
falls "$T/t.log"; ok $? "teacher denoising loss falls"
train "$T/p2" 60 --p2-gamma 1 2>"$T/p2.log" && falls "$T/p2.log"; ok $? "with P2 loss weighting (--p2-gamma 1) it falls too"
cmp -s "$T/p2/unet/diffusion_pytorch_model.safetensors" "$T/t/unet/diffusion_pytorch_model.safetensors"; [ $? -eq 1 ]
ok $? "... and trains different weights than the uniform loss"

# eval-cond: the trained teacher's ε-MSE with its own captions, others' and none, per t
"$BIN" eval-cond --model "$T/m" --unet "$T/t/unet/diffusion_pytorch_model.safetensors" --resolution 16 --items 8 \
    2>/dev/null > "$T/cond.json" && python3 - "$T/cond.json" <<'PY'
import json, math, sys
j = json.load(open(sys.argv[1]))
ok = all(len(j[k]) == 5 and all(math.isfinite(x) and x >= 0 for x in j[k]) for k in ("own", "other", "null"))
sys.exit(0 if ok and j["t"] == [100, 300, 500, 700, 900] and j["items"] == 8 else 1)
PY
ok $? "eval-cond reports finite ε-MSEs (own / other / null caption) at 5 timesteps"

# data-parallel shards (src/train/shards.h): a step cut into row ranges on threads of
# their own computes the one-thread step's gradient (the Adam moments after step 1 are
# (1-β1)·g and (1-β2)·g²); uneven shards (2, 3, 3 rows) on purpose
train "$T/s1" 1 --shards 1 2>/dev/null && train "$T/s3" 1 --shards 3 2>"$T/s3.log" && grep -q "3 shards" "$T/s3.log" &&
"$ST_COMPARE" "$T/s3/checkpoint-0000001/optim.safetensors" "$T/s1/checkpoint-0000001/optim.safetensors" 1e-4 '*' >"$T/sh.txt"
ok $? "teacher: 3 shards give the 1-shard gradient within 1e-4 ($(tail -n 1 "$T/sh.txt"))"
for s in 1 2; do
    "$BIN" train-vae --model "$T/m" --out "$T/vs$s" --resolution 16 --batch 4 --steps 1 --shards $s --sample-every 0 2>"$T/vs.log"
done
grep -q "2 shards" "$T/vs.log" &&
"$ST_COMPARE" "$T/vs2/checkpoint-0000001/optim.safetensors" "$T/vs1/checkpoint-0000001/optim.safetensors" 1e-4 '*' >"$T/sh.txt"
ok $? "VAE: 2 shards give the 1-shard gradient within 1e-4 ($(tail -n 1 "$T/sh.txt"))"
"$BIN" train vae --model "$T/m" --out "$T/vs1b" --resolution 16 --batch 4 --steps 1 --shards 1 --sample-every 0 2>"$T/vs.log" &&
cmp -s "$T/vs1b/checkpoint-0000001/optim.safetensors" "$T/vs1/checkpoint-0000001/optim.safetensors"
ok $? "sdxld train vae is train-vae under its new name (the same checkpoint, bit for bit)"

# resume: 6 steps straight vs 3 steps, stop, resume to 6 -> identical weights and moments
# (2 shards: the default on the 2-core CI machine, and the threaded path)
train "$T/a" 6 --shards 2 2>/dev/null
train "$T/b" 3 --shards 2 2>/dev/null && train "$T/b" 6 --resume --shards 2 2>"$T/b.log"
grep -q "resumed from" "$T/b.log"; ok $? "resume picks up the latest checkpoint"
cmp -s "$T/a/checkpoint-0000006/weights.safetensors" "$T/b/checkpoint-0000006/weights.safetensors" &&
cmp -s "$T/a/checkpoint-0000006/optim.safetensors" "$T/b/checkpoint-0000006/optim.safetensors"
ok $? "checkpoint + resume continues bit-identically (weights and Adam moments)"
[ "$(cat "$T/b/latest")" = "checkpoint-0000006" ]; ok $? "latest names the newest checkpoint"

# a checkpoint's weights serve as a UNet file
"$BIN" generate --model "$T/m" --unet "$T/a/checkpoint-0000006/weights.safetensors" --prompt "a red circle" \
    --width 16 --height 16 --seed 1 -o "$T/img.png" >/dev/null 2>&1; ok $? "a checkpoint's weights load as --unet"

# EMA: the exported UNet is the averaged weights (optim.safetensors "ema." rows), not the raw ones
train "$T/e" 4 --ema 0.5 2>/dev/null
python3 - "$T/e" <<'PY'
import json, struct, sys
def load(path, name):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little"); h = json.loads(f.read(n)); base = 8 + n
        e = h[name]; a, b = e["data_offsets"]; f.seek(base + a); raw = f.read(b - a)
    fmt = {"F32": "f", "F16": "e"}[e["dtype"]]
    return struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw)
d, k = sys.argv[1], "conv_in.weight"
out = load(d + "/unet/diffusion_pytorch_model.safetensors", k)
ema = load(d + "/checkpoint-0000004/optim.safetensors", "ema." + k)
raw = load(d + "/checkpoint-0000004/weights.safetensors", k)
f16 = lambda v: struct.unpack("<e", struct.pack("<e", v))[0]   # the export's rounding
same_ema = sum(x == f16(y) for x, y in zip(out, ema)); same_raw = sum(x == f16(y) for x, y in zip(out, raw))
print(f"# {len(out)} values: {same_ema} equal the fp16 EMA, {same_raw} the fp16 raw weights")
sys.exit(0 if same_ema == len(out) and same_raw < len(out) // 2 else 1)
PY
ok $? "with --ema the exported UNet is the EMA of the weights"
train "$T/b" 8 --resume --ema 0.5 2>"$T/be.log"; grep -q "no EMA in the checkpoint" "$T/be.log"
ok $? "turning EMA on at resume starts it from the weights (with a warning)"

# DMD2 with LoRA adapters: only adapters in the checkpoint, bit-identical resume, and the
# adapter file serves through generate --lora
dmd2() {  # OUT STEPS [extra]
    local out=$1 steps=$2; shift 2
    "$BIN" train dmd2 --teacher "$T/m" --out "$out" --resolution 16 --batch 2 --ttur 2 --steps "$steps" \
        --cache-size 8 --lr-generator 5e-3 --lr-fake 1e-3 --warmup 0 --lora-rank 2 --lora-alpha 4 \
        --checkpoint-every 3 --sample-every 0 --log-every 1 --seed 2 "$@"
}
dmd2 "$T/la" 6 --shards 2 2>/dev/null; ok $? "train dmd2 --lora-rank 2 runs"
dmd2 "$T/lb" 3 --shards 2 2>/dev/null && dmd2 "$T/lb" 6 --resume --shards 2 2>/dev/null
cmp -s "$T/la/checkpoint-0000006/weights.safetensors" "$T/lb/checkpoint-0000006/weights.safetensors" &&
cmp -s "$T/la/checkpoint-0000006/optim.safetensors" "$T/lb/checkpoint-0000006/optim.safetensors" &&
cmp -s "$T/la/generator.safetensors" "$T/lb/generator.safetensors"
ok $? "LoRA checkpoint + resume continues bit-identically (adapters, moments, merged generator)"

# DMD2's UNet passes in shards (backward simulation, real score with CFG, GAN both ways):
# the first iteration's generator, fake-score and head moments equal the 1-shard run's
for s in 1 3; do
    "$BIN" train dmd2 --teacher "$T/m" --out "$T/ds$s" --resolution 16 --batch 3 --ttur 2 --steps 1 --cache-size 8 \
        --lr-generator 5e-3 --lr-fake 1e-3 --warmup 0 --sample-every 0 --seed 2 --shards $s 2>"$T/ds.log"
done
grep -q "3 shards" "$T/ds.log" &&
"$ST_COMPARE" "$T/ds3/checkpoint-0000001/optim.safetensors" "$T/ds1/checkpoint-0000001/optim.safetensors" 1e-4 '*' >"$T/sh.txt"
ok $? "dmd2: 3 shards give the 1-shard gradients within 1e-4 ($(tail -n 1 "$T/sh.txt"))"
python3 - "$T/la" <<'PY'
import json, sys
def keys(p):
    with open(p, "rb") as f:
        n = int.from_bytes(f.read(8), "little"); return [k for k in json.loads(f.read(n)) if k != "__metadata__"]
g = [k for k in keys(sys.argv[1] + "/checkpoint-0000006/weights.safetensors") if k.startswith("generator")]
a = keys(sys.argv[1] + "/generator_lora.safetensors")
sys.exit(0 if g and all(k.startswith("generator_lora.lora_unet_") for k in g) and len(a) == 3 * (len(g) // 2) else 1)
PY
ok $? "the checkpoint holds the adapters only; generator_lora.safetensors has down/up/alpha per module"
gen() { "$BIN" generate --model "$T/m" --prompt "a red circle" --width 16 --height 16 --seed 1 "$@" >/dev/null 2>&1; }
gen -o "$T/base.png" && gen --lora "$T/la/generator_lora.safetensors" -o "$T/lora.png" &&
    gen --unet "$T/la/generator.safetensors" -o "$T/merged.png" && ! cmp -s "$T/base.png" "$T/lora.png"
ok $? "generate --lora applies the adapters (image differs from the base model's)"
gen --lora "$T/la/generator.safetensors" -o "$T/x.png"; [ $? -eq 1 ]; ok $? "generate --lora with a UNet file fails cleanly"

# bad input
"$BIN" train-teacher --model "$T/m" --out "$T/x" --batch 0 >/dev/null 2>&1; [ $? -eq 2 ]; ok $? "batch 0 rejected"
"$BIN" train-teacher --model "$T/m" --out "$T/x" --p2-gamma -1 >/dev/null 2>&1; [ $? -eq 2 ]; ok $? "a negative p2-gamma rejected"
"$BIN" train-vae --model "$T/m" --out "$T/x" --shards 17 >/dev/null 2>&1; [ $? -eq 2 ]; ok $? "shards above 16 rejected"
"$BIN" train-teacher --model "$T/nowhere" --out "$T/x" --steps 1 >/dev/null 2>"$T/err"; [ $? -eq 1 ] && grep -q nowhere "$T/err"
ok $? "missing model folder named"
"$BIN" train-teacher --model "$T/m" --out "$T/fresh" --steps 2 --resume >/dev/null 2>"$T/err"; [ $? -eq 1 ] && grep -q latest "$T/err"
ok $? "--resume without a checkpoint is a clear error"

echo "1..$n"
[ $fails -eq 0 ]

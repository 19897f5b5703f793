#!/usr/bin/env bash
# test_cli.sh — the offline subcommands end to end against the golden run
# (docs/conformance.md): encode, unet, vae, generate --noise, the PNG pixels, seeds and
# batching, init + reload, and clear failures on bad input.  TAP output.
set -u
BIN=${SDXLD_BIN:?} CMP=${ST_COMPARE:?} DATA=${SDXLD_TEST_DATA:?}
M=$DATA/tiny-sdxl-a G=$M/golden.safetensors
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT
n=0 fails=0
ok() { n=$((n+1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails+1)); fi; }
run() { "$@" >"$T/out" 2>"$T/err"; }

python3 -c "import json,sys; json.dump(json.load(open('$M/golden.json'))['prompts'], open('$T/prompts.json','w'))"

run "$BIN" encode --model "$M" --prompts "$T/prompts.json" --out "$T/enc.safetensors"; ok $? "encode runs"
"$CMP" "$T/enc.safetensors" "$G" 0 tok1_ids tok2_ids; ok $? "token ids equal the reference"
"$CMP" "$T/enc.safetensors" "$G" 1e-4 te1_penultimate te1_last te2_penultimate te2_text_embeds prompt_embeds pooled_embeds
ok $? "text encoder outputs within 1e-4"

run "$BIN" unet --model "$M" --in "$G" --out "$T/unet.safetensors"; ok $? "unet runs on the golden file as input"
"$CMP" "$T/unet.safetensors" "$G" 1e-4 unet_out; ok $? "unet_out within 1e-4"

run "$BIN" unet --model "$M" --in "$G" --out "$T/unet_bw.safetensors" --backward; ok $? "unet --backward runs"
grads=$(python3 -c "
import json, struct
f = open('$G', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
print(' '.join(k for k in h if k.startswith('unet_grad.') or k in ('unet_dx', 'unet_dehs', 'unet_dtext')))")
[ "$(echo $grads | wc -w)" -eq 123 ]; ok $? "the golden holds 123 gradient tensors"
"$CMP" "$T/unet_bw.safetensors" "$G" 1e-4 unet_out $grads > "$T/cmp"; r=$?; grep -v "^ok" "$T/cmp"
ok $r "unet_dx, unet_dehs, unet_dtext and all 120 unet_grad.* within 1e-4 (every activation kept)"
run "$BIN" unet --model "$M" --in "$G" --out "$T/unet_rc.safetensors" --backward --recompute; ok $? "unet --backward --recompute runs"
"$CMP" "$T/unet_rc.safetensors" "$G" 1e-4 unet_out $grads > "$T/cmp"; r=$?; grep -v "^ok" "$T/cmp"
ok $r "... with block recomputation: the same 123 gradients within 1e-4"
"$CMP" "$T/unet_rc.safetensors" "$T/unet_bw.safetensors" 0 unet_out $grads > "$T/cmp"; r=$?; grep -v "^ok" "$T/cmp"
ok $r "keep-all and recompute give bit-identical gradients"

run "$BIN" vae --model "$M" --in "$G" --out "$T/vae.safetensors"; ok $? "vae runs"
"$CMP" "$T/vae.safetensors" "$G" 1e-4 vae_enc_mean vae_dec_out; ok $? "vae encoder mean and decoder output within 1e-4"

run "$BIN" generate --model "$M" --prompts "$T/prompts.json" --width 64 --height 64 --noise "$G" \
    --out-tensor "$T/gen.safetensors" -o "$T/img.png"; ok $? "generate --noise runs"
"$CMP" "$T/gen.safetensors" "$G" 1e-3 sample_eps_0 sample_eps_1 sample_eps_2 sample_eps_3 sample_denoised_0 \
    sample_denoised_1 sample_denoised_2 sample_denoised_3 sample_final_latent sample_image
ok $? "4-step run within 1e-3 of the golden tensors"
"$CMP" --png "$T/img-0.png" "$G" sample_image 0; ok $? "PNG 0 pixels = golden sample_image[0]"
"$CMP" --png "$T/img-1.png" "$G" sample_image 1; ok $? "PNG 1 pixels = golden sample_image[1]"
grep -q "parameters" "$T/img-0.png" && grep -q "Seed" "$T/img-0.png"; ok $? "PNG carries the parameters text chunk"

# seeds: identical bytes for identical runs; a batch of 2 = two single runs with s, s+1
run "$BIN" generate --model "$M" --prompt "a red cube" --seed 7 -o "$T/a.png"; ok $? "generate from a seed"
run "$BIN" generate --model "$M" --prompt "a red cube" --seed 7 -o "$T/b.png"
cmp -s "$T/a.png" "$T/b.png"; ok $? "same seed, identical PNG bytes"
printf '["a red cube", "a red cube"]' > "$T/two.json"
run "$BIN" generate --model "$M" --prompts "$T/two.json" --seed 7 -o "$T/pair.png"
run "$BIN" generate --model "$M" --prompt "a red cube" --seed 8 -o "$T/c.png"
cmp -s "$T/a.png" "$T/pair-0.png" && ! cmp -s "$T/pair-0.png" "$T/pair-1.png"
ok $? "image 0 of a batch equals the single run with seed s, image 1 differs"
run "$BIN" generate --model "$M" --prompt "a red cube" -n 2 --seed 7 -o "$T/nn.png"
cmp -s "$T/nn-0.png" "$T/pair-0.png" && cmp -s "$T/nn-1.png" "$T/pair-1.png"
ok $? "-n 2: two images of one prompt, the same as two copies of it in --prompts"
python3 - "$T/pair-1.png" "$T/c.png" <<'PY'
import sys, zlib
def idat(p):
    b = open(p, 'rb').read(); i = 8; out = b''
    while i < len(b):
        n = int.from_bytes(b[i:i+4], 'big'); t = b[i+4:i+8]
        if t == b'IDAT': out += b[i+8:i+8+n]
        i += 12 + n
    return zlib.decompress(out)
sys.exit(0 if idat(sys.argv[1]) == idat(sys.argv[2]) else 1)
PY
ok $? "image 1 of a batch has the pixels of the single run with seed s+1"
# regression: with OpenBLAS, GEMM kernels (and summation order) changed with the batch
# size, so a batched image differed from the same image alone in ~1 pixel in 10^4
printf '["batch 2000","batch 2001","batch 2002","batch 2003"]' > "$T/four.json"
run "$BIN" generate --model "$M" --prompts "$T/four.json" --seed 2000 -o "$T/four.png"
same=0
for i in 0 1 2 3; do
  run "$BIN" generate --model "$M" --prompt "batch 200$i" --seed "200$i" -o "$T/alone$i.png"
  cmp -s "$T/four-$i.png" "$T/alone$i.png" && same=$((same+1))
done
[ $same -eq 4 ]; ok $? "a batch of 4 is byte-identical to the 4 images made alone ($same/4)"
run "$BIN" generate --model "$M" --prompt "x" --steps 1 --seed 3 -o "$T/one.png"; ok $? "1-step generation (t=399)"
run "$BIN" generate --model "$M" --prompt "x" --timesteps 999,500,20 --seed 3 -o "$T/three.png"; ok $? "arbitrary decreasing timesteps"
# a size far above the native one (the tiny model's is 64x64) is made, with a warning in the log
run "$BIN" generate --model "$M" --prompt "x" --width 96 --height 96 --seed 3 -o "$T/s96.png"
[ $? -eq 0 ] && ! grep -q "more than 1.5x" "$T/err"; ok $? "96x96 (1.5x the native side): no size warning"
run "$BIN" generate --model "$M" --prompt "x" --width 128 --height 64 --seed 3 -o "$T/s128.png"
[ $? -eq 0 ] && [ -s "$T/s128.png" ] && grep -q " W .*128x64 is more than 1.5x the model's native 64x64.*tiled" "$T/err"
ok $? "128x64: made, and the log warns of tiling: $(grep -o "128x64 is .*" "$T/err")"

# --vae-tile (tests/test_vae_tile.c tests the decode): one tile is the untiled image, a
# larger latent is tiled; bench --vae-error reports the tiled decode against the untiled
run "$BIN" generate --model "$M" --prompt "a red cube" --seed 7 --vae-tile 8 -o "$T/tile1.png"
cmp -s "$T/a.png" "$T/tile1.png"; ok $? "--vae-tile 8 at 64x64 (one tile of 8x8 latent pixels): the same PNG bytes"
run "$BIN" generate --model "$M" --prompt "a red cube" --seed 7 --width 128 --height 96 -o "$T/big.png"
run "$BIN" generate --model "$M" --prompt "a red cube" --seed 7 --width 128 --height 96 --vae-tile 8 -o "$T/bigt.png"
[ $? -eq 0 ] && ! cmp -s "$T/big.png" "$T/bigt.png"; ok $? "--vae-tile 8 at 128x96: tiled, the pixels differ"
run "$BIN" generate --model "$M" --prompt "x" --vae-tile 3 -o "$T/x.png"
[ $? -eq 1 ] && grep -q "vae_tile 3" "$T/err"; ok $? "--vae-tile 3 rejected: $(cat "$T/err")"

# the engine options' numbers parse strictly (tests/fuzz/fuzz_args.c: atoi/atof took "abc"
# as 0, which meant all cores, no tiling, scale 1): a usage error naming the option
for bad in "generate --threads abc" "generate --vae-tile -8" "generate --lora-scale nan" "bench --threads 2x" \
           "encode --vae-tile 99999999999"; do
  set -- $bad
  run "$BIN" "$1" "$2" "$3" --model "$M" --prompt x -o "$T/x.png"   # the bad option comes first
  [ $? -eq 2 ] && grep -q "option $2: '$3' is not a" "$T/err"; ok $? "$1 $2 $3 refused: $(cat "$T/err")"
done
run "$BIN" bench --model "$M" --width 128 --height 128 --stages vae --vae-tile 8 --vae-error --threads 1
[ $? -eq 0 ] && grep -q "tiled decode (tiles of 8, overlap 2) vs untiled: max |diff| [0-9]*/255, PSNR" "$T/out"
ok $? "bench --vae-tile 8 --vae-error: $(grep "vs untiled" "$T/out" | cut -d'(' -f1-2)"

# bad input: clear one-line errors and non-zero exits, never a crash
run "$BIN" generate --model "$M" --prompt "x" --timesteps 500,600 -o "$T/x.png"
[ $? -eq 1 ] && grep -q "timesteps" "$T/err"; ok $? "increasing timesteps rejected: $(cat "$T/err")"
run "$BIN" generate --model "$M" --prompt "x" --width 60 -o "$T/x.png"
[ $? -eq 1 ] && grep -q "width" "$T/err"; ok $? "width not a multiple of 8 rejected"
run "$BIN" unet --model "$M" --in "$T/enc.safetensors" --out "$T/x.safetensors"
[ $? -eq 1 ] && grep -q "unet_x" "$T/err"; ok $? "missing input tensor named: $(cat "$T/err")"
run "$BIN" unet --model "$T/nowhere" --in "$G" --out "$T/x.safetensors"
[ $? -eq 1 ] && grep -q "nowhere" "$T/err"; ok $? "unreadable model folder named"
cp -r "$M" "$T/broken" && head -c 100000 "$M/unet/diffusion_pytorch_model.safetensors" > "$T/broken/unet/diffusion_pytorch_model.safetensors"
run "$BIN" generate --model "$T/broken" --prompt x -o "$T/x.png"
[ $? -eq 1 ] && grep -q "diffusion_pytorch_model" "$T/err"; ok $? "truncated weights rejected: $(cat "$T/err")"
printf '{"not": "a list"}' > "$T/bad.json"
run "$BIN" encode --model "$M" --prompts "$T/bad.json" --out "$T/x.safetensors"
[ $? -eq 1 ] && grep -q "array" "$T/err"; ok $? "bad prompts file rejected"
run "$BIN" frobnicate; [ $? -eq 2 ]; ok $? "unknown command exits 2"

# the built-in model (models/shapes-small) when no --model is given
run "$BIN" generate --prompt "a red circle in the center, on a white background" --seed 1 -o "$T/builtin.png"
[ $? -eq 0 ] && head -c 8 "$T/builtin.png" | od -An -c | grep -q "P   N   G"; ok $? "generate without --model uses the built-in model"

# init: a fresh model of the tiny config loads and generates; shapes equal the golden's
run "$BIN" init --from "$M" --out "$T/fresh" --seed 1; ok $? "init writes a model folder"
run "$BIN" unet --model "$T/fresh" --in "$G" --out "$T/fresh_unet.safetensors"; ok $? "the fresh model runs the golden inputs"
run "$BIN" generate --model "$T/fresh" --prompt "a red cube" --seed 1 -o "$T/fresh.png"; ok $? "the fresh model generates"

echo "1..$n"
[ $fails -eq 0 ]

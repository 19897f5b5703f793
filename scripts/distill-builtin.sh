#!/usr/bin/env bash
# distill-builtin.sh — DMD2-distil the shapes teacher into the 4-step built-in generator,
# with the two ablations of the quality benchmark (no GAN loss; no backward simulation)
# and the LoRA variant (rank-16 adapters on the generator), each with the same budget.
# Then the quality benchmark of all of them.
# Usage: scripts/distill-builtin.sh TEACHER_DIR RUNS_DIR [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SDXLD:-build/server/sdxld}
T=${1:?usage: distill-builtin.sh TEACHER_DIR RUNS_DIR [ITERATIONS]} R=${2:?} N=${3:-1500}
mkdir -p "$R"
run() {  # NAME [extra flags]
  local name=$1; shift
  local t0=$(date +%s)
  "$BIN" train dmd2 --teacher "$T" --out "$R/$name" --resolution 64 --batch 4 --steps "$N" --ttur 5 \
      --lr-generator 5e-5 --lr-fake 5e-5 --warmup 20 --guidance 4 --cache-size 4096 \
      --sample-every 200 --checkpoint-every 200 --log-every 25 --seed 7 "$@" 2> "$R/$name.log"
  echo "distill-builtin: $name $(( $(date +%s) - t0 )) s"
}
run dmd2
run no-gan --no-gan
run no-backsim --no-backward-simulation
run lora --lora-rank 16 --lora-alpha 16 --lr-generator 1e-3
scripts/quality-bench.sh "$T" "DMD2 4-step=$R/dmd2/generator.safetensors" \
    "DMD2 w/o GAN=$R/no-gan/generator.safetensors" \
    "DMD2 w/o backward simulation=$R/no-backsim/generator.safetensors" \
    "DMD2 LoRA r16=$R/lora/generator.safetensors" | tee "$R/quality.jsonl"

#!/usr/bin/env bash
# quality-bench.sh — the DMD2 quality benchmark on the shapes model (docs/benchmarks.md):
# attribute accuracy on the fixed 60-prompt set (2 seeds each) and MMD² to dataset
# images for the teacher (50-step DDIM + CFG), the teacher at 4 steps, and each DMD2
# generator given (the full recipe and its ablations).
# Usage: scripts/quality-bench.sh TEACHER_DIR [NAME=GENERATOR.safetensors ...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SDXLD:-build/server/sdxld}
T=${1:?usage: quality-bench.sh TEACHER_DIR [NAME=GENERATOR.safetensors ...]}
shift
G=${GUIDANCE:-4}
"$BIN" eval-shapes --model "$T" --sampler ddim --steps 50 --guidance "$G" --label "teacher, DDIM 50 + CFG $G"
"$BIN" eval-shapes --model "$T" --sampler ddim --steps 4 --guidance "$G" --label "teacher, DDIM 4 + CFG $G"
"$BIN" eval-shapes --model "$T" --label "teacher, DMD2 sampler 4 steps (no CFG)"
for spec in "$@"; do
  "$BIN" eval-shapes --model "$T" --unet "${spec#*=}" --label "${spec%%=*}"
done

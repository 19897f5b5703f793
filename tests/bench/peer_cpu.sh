#!/usr/bin/env bash
# peer_cpu.sh — sdxld against diffusers on PyTorch, on the same CPU, the same SDXL-size
# model and the same shapes, rounds interleaved; prints a markdown table of medians with
# ratios (docs/benchmarks.md).  Run by hand, never in CI:
#
#   tests/bench/peer_cpu.sh                  # 3 rounds at 512x512, 2 threads
#
#   BUILD    (build)              the sdxld build folder
#   MODEL    (/tmp/sdxl-rand)     made with `sdxld init` (F16 files) when missing
#   VENV     (tests/bench/.venv-peer)  made with torch, diffusers, transformers from PyPI
#                                 when missing (or point it at an existing one)
#   ROUNDS (3)  SIZE (512)  THREADS (2)  MODES ("f32 bf16 auto": sdxld --weights-dtype)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MODEL=${MODEL:-/tmp/sdxl-rand}
VENV=${VENV:-tests/bench/.venv-peer}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-512}
THREADS=${THREADS:-2}
MODES=${MODES:-f32 bf16 auto}
BIN=$BUILD/server/sdxld
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [ ! -f "$MODEL/unet/config.json" ]; then
  "$BIN" init --from conf/models/sdxl-base --tokenizers-from tests/data/tiny-sdxl-a --out "$MODEL" --dtype F16
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch diffusers transformers accelerate
fi

# one sdxld run: "text unet vae e2e rss" in seconds / MiB
sdxld_run() {
  "$BIN" bench --model "$MODEL" --width "$SIZE" --height "$SIZE" --threads "$THREADS" --repeat 1 \
      --stages text,unet,vae,e2e --weights-dtype "$1" 2>/dev/null |
    awk -F'|' '/text encoders/ {t=$5} /unet \(1 step\)/ {u=$5} /vae decode/ {v=$5} /end-to-end/ {e=$5}
               /^peak RSS/ {split($0, a, " "); r=a[3]}
               END {printf "%.3f %.3f %.3f %.3f %s\n", t/1000, u/1000, v/1000, e/1000, r}'
}

torch_run() {
  "$VENV/bin/python" tests/bench/peer_torch.py "$MODEL" "$SIZE" "$SIZE" "$THREADS" 2>/dev/null |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["text"], r["unet"], r["vae"], r["e2e"], r["rss_mib"])'
}

for ((i = 1; i <= ROUNDS; i++)); do
  for m in $MODES; do echo "round $i: sdxld $m" >&2; sdxld_run "$m" >> "$OUT/sdxld-$m"; done
  echo "round $i: pytorch" >&2
  torch_run >> "$OUT/torch"
done

python3 - "$OUT" "$MODES" "$SIZE" "$THREADS" <<'EOF'
import statistics, sys
out, modes, size, threads = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
def med(name):
    rows = [list(map(float, l.split())) for l in open(f"{out}/{name}") if l.strip()]
    return [statistics.median(c) for c in zip(*rows)]
torch = med("torch")
cols = [("sdxld " + m, med("sdxld-" + m)) for m in modes] + [("diffusers on PyTorch fp32", torch)]
stages = ["text encoders, one prompt", "UNet, one step", "VAE decode", "4-step image", "peak RSS"]
print(f"{size}x{size}, {threads} threads, median of rounds; ratio = PyTorch time / sdxld time\n")
print("| stage | " + " | ".join(c for c, _ in cols) + " |")
print("|---|" + "---|" * len(cols))
for i, s in enumerate(stages):
    cells = []
    for c, v in cols:
        if i == 4: cells.append(f"{v[i] / 1024:.1f} GiB")
        elif c.startswith("diffusers"): cells.append(f"{v[i]:.2f} s")
        else: cells.append(f"{v[i]:.2f} s ({torch[i] / v[i]:.2f}x)")
    print(f"| {s} | " + " | ".join(cells) + " |")
EOF

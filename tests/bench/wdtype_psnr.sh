#!/usr/bin/env bash
# wdtype_psnr.sh — how far each weights_dtype moves a picture: one 4-step image per mode
# from the same prompt and seed, PSNR in 8-bit pixels against the f32 one (docs/formats.md,
# docs/benchmarks.md).  Run by hand:  MODEL=/tmp/sdxl-rand tests/bench/wdtype_psnr.sh
#   BUILD (build)  MODEL (/tmp/sdxl-rand)  SIZE (512)  MODES ("bf16 auto")  PY (python3 with Pillow)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BUILD:-build}/server/sdxld
MODEL=${MODEL:-/tmp/sdxl-rand}
SIZE=${SIZE:-512}
PY=${PY:-python3}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
gen() { "$BIN" generate --model "$MODEL" --prompt "a red circle in the center, on a white background" --seed 7 \
          --width "$SIZE" --height "$SIZE" --weights-dtype "$1" -o "$T/$1.png" 2>/dev/null; }
gen f32
for m in ${MODES:-bf16 auto}; do
  gen "$m"
  "$PY" - "$T/f32.png" "$T/$m.png" "$m" <<'PYEOF'
import math, sys
from PIL import Image
a, b = (list(Image.open(p).convert("RGB").getdata()) for p in sys.argv[1:3])
se = sum((x - y) ** 2 for pa, pb in zip(a, b) for x, y in zip(pa, pb))
mse = se / (3 * len(a))
diff = max(abs(x - y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))
psnr = float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)
print(f"{sys.argv[3]} vs f32: PSNR {psnr:.1f} dB, max difference {diff} levels, "
      f"{sum(pa != pb for pa, pb in zip(a, b))} of {len(a)} pixels differ")
PYEOF
done

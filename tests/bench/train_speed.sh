#!/usr/bin/env bash
# train_speed.sh — training steps per second on the CPU for the "Training step speed"
# table of docs/benchmarks.md: the shapes teacher (batch 16) and DMD2 (batch 4, TTUR 5)
# at 64×64 with 1 shard and with the default (one shard per core).  Timed between two
# logged steps, so loading and caching are left out.  Not a test: numbers, no verdict.
# Usage: tests/bench/train_speed.sh MODEL_DIR [SDXLD]
#   MODEL_DIR: a shapes model folder with a trained VAE (models/shapes-small will do)
set -euo pipefail
M=${1:?usage: train_speed.sh MODEL_DIR [SDXLD]} BIN=${2:-build/server/sdxld}
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT

# seconds between the logged steps A and B of a log (the log lines' wall clock)
span() { python3 - "$1" "$2" "$3" <<'PY'
import re, sys
log, a, b = open(sys.argv[1]).read(), int(sys.argv[2]), int(sys.argv[3])
ts = {int(m.group(2)): m.group(1) for m in re.finditer(r"(\d\d:\d\d:\d\d\.\d+) step (\d+)/", log)}
sec = lambda s: int(s[0:2]) * 3600 + int(s[3:5]) * 60 + float(s[6:])
print(f"{(b - a) / (sec(ts[b]) - sec(ts[a])):.2f}")
PY
}

for shards in 1 0; do
    name=$([ $shards = 1 ] && echo "1 shard" || echo "default shards")
    "$BIN" train teacher --model "$M" --out "$T/t$shards" --steps 60 --batch 16 --resolution 64 --lr 3e-4 --warmup 10 \
        --cache-size 256 --log-every 20 --ema 0.999 --p2-gamma 1 --checkpoint-every 1000 --sample-every 0 \
        --shards $shards 2>"$T/t.log"
    echo "teacher batch 16, $name: $(span "$T/t.log" 20 60) it/s"
    "$BIN" train dmd2 --teacher "$M" --out "$T/d$shards" --resolution 64 --batch 4 --steps 40 --ttur 5 \
        --lr-generator 5e-5 --lr-fake 5e-5 --warmup 20 --guidance 4 --cache-size 256 --sample-every 0 \
        --checkpoint-every 1000 --log-every 10 --seed 7 --shards $shards 2>"$T/d.log"
    echo "dmd2 batch 4, $name: $(span "$T/d.log" 10 40) it/s"
done

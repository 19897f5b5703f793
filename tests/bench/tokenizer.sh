#!/usr/bin/env bash
# tokenizer.sh — the tokenizer on pathological prompts (the BPE merge queue must stay
# O(n log n)): `sdxld encode` of the tiny golden model on a 200 kB single word, against a
# one-word prompt, so the difference is tokenizing.
# Not a test: numbers, no verdict (tests/test_tokenizer.c checks the results).
# Usage: tests/bench/tokenizer.sh [SDXLD]
set -euo pipefail
BIN=${1:-build/server/sdxld} M=tests/data/tiny-sdxl-a
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT
python3 - "$T" <<'PY'
import json, sys
d = sys.argv[1]
json.dump(["cube"], open(f"{d}/short.json", "w"))
json.dump(["".join("abcdefghij"[i * 7 % 10] for i in range(200000))], open(f"{d}/word.json", "w"))
PY
for p in short word short word short word; do   # interleaved; the best of three counts
    t0=$(date +%s.%N)
    "$BIN" encode --model "$M" --prompts "$T/$p.json" --out "$T/$p.safetensors" 2>/dev/null
    echo "$p $(python3 -c "import sys; print((float(sys.argv[2]) - float(sys.argv[1])) * 1000)" "$t0" "$(date +%s.%N)")"
done | python3 -c "
import sys
best = {}
for line in sys.stdin:
    k, v = line.split(); best[k] = min(best.get(k, 1e18), float(v))
print(f\"one word: {best['short']:.0f} ms; 200 kB word: {best['word']:.0f} ms (+{best['word'] - best['short']:.0f} ms)\")"


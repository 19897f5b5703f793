#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] — build the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with
# clang under ASan+UBSan in build-fuzz and run each for SECONDS (default 60) from its seed
# corpus (tests/fuzz/corpus/NAME; what it finds new goes to build-fuzz/corpus/NAME).  A crash,
# a leak or UB stops with the reproducer in build-fuzz/crash-NAME-*: add it to the seed
# corpus once fixed.  Deterministic per run (-seed=1), so CI can run it briefly.
#   harnesses: weights (safetensors and torch checkpoints through st_open), pickle (the
#   interpreter), tokenizer (both CLIP tokenizers), edge_head (the HTTP edge's head checks),
#   model_config (config.json of UNet, VAE, CLIP, scheduler), config_file (the daemon's config),
#   api_body (the request body of every JSON route through the handlers' parsers), args
#   (`serve`'s flags and the engine options), lora (the LoRA key mapper and merge), http
#   (whole connections through the daemon's HTTP stack, in process).
# The harnesses' output on stdout and stderr is closed (-close_fd_mask=3; libFuzzer's own
# lines and sanitizer reports still show).  Seeds of api_body, args, lora and http:
# tests/fuzz/make_seeds.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${1:-60}
. tests/fuzz/lib.sh
fuzz_build
for h in "${FUZZ_HARNESSES[@]}"; do
    echo "fuzz: $h for ${S}s"
    fuzz_one "$h" "$S" 1 |
        grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+[[:space:]]+DONE|==[0-9]+==ERROR|SUMMARY)" || true
    if fuzz_found "$h"; then
        echo "fuzz: $h found a failure: $(ls "$B"/crash-"$h"-* | grep -v -- -slow-unit-)" >&2
        exit 1
    fi
done
echo "fuzz: all harnesses ran ${S}s each, nothing found"

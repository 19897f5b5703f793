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
B=${FUZZ_BUILD_DIR:-build-fuzz}
HARNESSES=(weights pickle tokenizer edge_head model_config config_file api_body args lora http)
if ! command -v clang >/dev/null; then
    echo "fuzz: clang is not installed (apt-get install clang): nothing run" >&2
    exit 2
fi
if [ ! -f "$B/build.ninja" ]; then
    CC=clang meson setup "$B" -Dfuzz=true -Dcuda=disabled -Dblas=disabled -Dsystemd=disabled \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C "$B" $(printf "tests/fuzz/fuzz_%s " "${HARNESSES[@]}") >/dev/null
export SDXLD_TEST_DATA="$PWD/tests/data" ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for h in "${HARNESSES[@]}"; do
    mkdir -p "$B/corpus/$h"
    echo "fuzz: $h for ${S}s"
    "$B/tests/fuzz/fuzz_$h" -max_total_time="$S" -seed=1 -max_len=65536 -rss_limit_mb=2048 -close_fd_mask=3 \
        -artifact_prefix="$B/crash-$h-" -print_final_stats=1 "$B/corpus/$h" "tests/fuzz/corpus/$h" 2>&1 |
        grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+[[:space:]]+DONE|==[0-9]+==ERROR|SUMMARY)" || true
    # libFuzzer's exit status is lost in the pipe: a reproducer file is the verdict
    if ls "$B"/crash-"$h"-* >/dev/null 2>&1; then
        echo "fuzz: $h found a failure: $(ls "$B"/crash-"$h"-*)" >&2
        exit 1
    fi
done
echo "fuzz: all harnesses ran ${S}s each, nothing found"

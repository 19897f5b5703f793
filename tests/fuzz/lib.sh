# tests/fuzz/lib.sh — what run.sh (the short CI runs) and campaign.sh (the long campaign)
# share: the harness list, the build, the environment and one libFuzzer run.  Sourced.
FUZZ_HARNESSES=(weights pickle tokenizer edge_head model_config config_file api_body args lora http image)
B=${FUZZ_BUILD_DIR:-build-fuzz}

# fuzz_build: configure build-fuzz (clang, ASan+UBSan) once and build every harness
fuzz_build() {
    if ! command -v clang >/dev/null; then
        echo "fuzz: clang is not installed (apt-get install clang): nothing run" >&2
        exit 2
    fi
    if [ ! -f "$B/build.ninja" ]; then
        CC=clang meson setup "$B" -Dfuzz=true -Dcuda=disabled -Dblas=disabled -Dsystemd=disabled \
            -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
    fi
    ninja -C "$B" $(printf "tests/fuzz/fuzz_%s " "${FUZZ_HARNESSES[@]}") >/dev/null
    export SDXLD_TEST_DATA="$PWD/tests/data" ASAN_OPTIONS=detect_leaks=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
}

# fuzz_one NAME SECONDS SEED: run one harness from its seeds and its grown corpus
# ($B/corpus/NAME, where new inputs go); libFuzzer's output on stdout.  A reproducer file
# $B/crash-NAME-* is the verdict (the exit status is lost in callers' pipes).
fuzz_one() {
    local h=$1 s=$2 seed=$3
    mkdir -p "$B/corpus/$h"
    "$B/tests/fuzz/fuzz_$h" -max_total_time="$s" -seed="$seed" -max_len=65536 -rss_limit_mb=2048 \
        -close_fd_mask=3 -artifact_prefix="$B/crash-$h-" -print_final_stats=1 \
        "$B/corpus/$h" "tests/fuzz/corpus/$h" 2>&1
}

# fuzz_found NAME: true when the harness left a reproducer (a crash, leak, timeout or
# out-of-memory).  libFuzzer's slow-unit files (one input over 10 s) are not counted: on a
# loaded or paused machine any input can take that long; fuzz_slow lists them to look at.
fuzz_found() { ls "$B"/crash-"$1"-* 2>/dev/null | grep -qv -- "-slow-unit-"; }
fuzz_slow() { ls "$B"/crash-"$1"-slow-unit-* 2>/dev/null || true; }

#!/usr/bin/env bash
# test_cuda_module.sh FAKE_DRIVER_DIR — the CUDA backend is a module loaded on demand
# (src/backend/backend.c): a CPU run maps no CUDA library; without a driver the CUDA
# backend is refused before the module loads; with a driver showing a device (the fake
# libcuda.so.1 in FAKE_DRIVER_DIR) the module loads, resolves what it needs from the
# binary and answers itself (here: the runtime finds the fake driver unusable); a missing
# module is named.  The libraries a run loads are read from the dynamic loader's log
# (LD_DEBUG=libs).  TAP output.
set -u
BIN=${SDXLD_BIN:?} DATA=${SDXLD_TEST_DATA:?} FAKE=${1:?usage: test_cuda_module.sh FAKE_DRIVER_DIR}
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT
n=0 fails=0
ok() { n=$((n+1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails+1)); fi; }
gen() {  # LOG BACKEND [env...]: a tiny-model generation, the loader's log and stderr in LOG
    local log=$1 backend=$2; shift 2
    env LD_DEBUG=libs "$@" "$BIN" generate --model "$DATA/tiny-sdxl-a" --prompt "a red cube" --backend "$backend" \
        -o "$T/out.png" > "$log" 2>&1
}
loaded() { grep -q "calling init: .*$2" "$1"; }

gen "$T/cpu.log" cpu; ok $? "a CPU generation runs"
! loaded "$T/cpu.log" "libcublas" && ! loaded "$T/cpu.log" "libcudnn" && ! loaded "$T/cpu.log" "sdxld-cuda"
ok $? "... and loads no CUDA library and not the module"

gen "$T/nodrv.log" cuda LD_LIBRARY_PATH=/nonexistent
[ $? -ne 0 ] && grep -q "cuda: no usable GPU: no NVIDIA driver" "$T/nodrv.log"
ok $? "without a driver the CUDA backend is refused: $(grep -o 'cuda: no usable GPU[^)]*)' "$T/nodrv.log" | head -1)"
! loaded "$T/nodrv.log" "libcublas" && ! loaded "$T/nodrv.log" "sdxld-cuda"
ok $? "... before the module or cuBLAS is loaded"

gen "$T/fake.log" cuda LD_LIBRARY_PATH="$FAKE"
loaded "$T/fake.log" "sdxld-cuda.so" && loaded "$T/fake.log" "libcublasLt"
ok $? "a driver showing a device loads the module and cuBLAS"
msg=$(grep -o "cuda: no usable GPU: .*" "$T/fake.log" | head -1)
[ -n "$msg" ] && ! grep -q "no NVIDIA driver\|did not load\|no entry point" "$T/fake.log"
ok $? "... whose own device setup answers (every symbol it needs resolved from the binary): $msg"

gen "$T/nomod.log" cuda LD_LIBRARY_PATH="$FAKE" SDXLD_CUDA_MODULE="$T/missing.so"
[ $? -ne 0 ] && grep -q "the CUDA module of this build did not load" "$T/nomod.log"
ok $? "a missing module is named: $(grep -o 'cuda: the CUDA module[^:]*' "$T/nomod.log" | head -1)"

echo "1..$n"
[ "$fails" -eq 0 ]

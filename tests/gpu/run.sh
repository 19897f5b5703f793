#!/usr/bin/env bash
# tests/gpu/run.sh BUILD [MODEL_DIR] — everything that needs a GPU, in one go, sized for a
# short lease on an H100/H200 (about 3-4 minutes, each step time-boxed):
#
#   1. the gpu suite: test_gpu_ops (every op vs the CPU backend), test_gpu_golden (the
#      tiny golden model through all stages), test_gpu_backward (every training op vs the
#      CPU backend), run straight from BUILD (no meson needed), and the tiny model's UNet
#      backward on the GPU against all 123 golden gradients (`sdxld unet --backward`)
#   2. `sdxld init` of an SDXL-size model with random F16 weights (conf/models/sdxl-base,
#      tokenizers from tests/data/tiny-sdxl-a) into MODEL_DIR, unless it already exists
#   3. `sdxld bench --backend cuda` at 1024², 4 steps, batch 1, 4 and 8 (one process each)
#
# and prints one table last.  BUILD is a meson build folder with -Dcuda=enabled, or a
# bundle made by tests/gpu/bundle.sh (same layout plus lib/ with the libraries the GPU
# machine lacks).  cuBLAS/cuDNN are taken from the machine: the CUDA toolkit folder, the
# system, or the nvidia-* Python wheels next to PyTorch.  Logs go to $OUT when set (the
# device tool brings that folder back), else to /tmp/sdxld-gpu.  Exit status 0 only
# when every step passed.  Run from anywhere; paths are relative to the repository.
set -u
cd "$(dirname "$0")/../.."
B=${1:?usage: tests/gpu/run.sh BUILD_DIR [MODEL_DIR]}
B=$(cd "$B" && pwd)
MODEL=${2:-/tmp/sdxl-rand-gpu}
LOG=${OUT:-/tmp/sdxld-gpu}
mkdir -p "$LOG"
T0=$(date +%s)
declare -a SUMMARY
status=0
note() { SUMMARY+=("$1"); echo "== $1"; }
elapsed() { echo $(( $(date +%s) - T0 )); }

# ---- libraries ----
libpath="$B/lib"
need="libcublas.so.13 libcublasLt.so.13 libcudnn.so.9"
sitedirs=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null || true)
for lib in $need; do
    found=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
             /usr/lib/x86_64-linux-gnu /usr/local/lib; do
        [ -e "$d/$lib" ] && { found=$d; break; }
    done
    if [ -z "$found" ]; then
        for s in $sitedirs; do
            f=$(ls "$s"/nvidia/*/lib/"$lib" "$s"/nvidia/cu13/lib/"$lib" 2>/dev/null | head -1)
            [ -n "$f" ] && { found=$(dirname "$f"); break; }
        done
    fi
    if [ -n "$found" ]; then libpath="$libpath:$found"; else echo "warning: $lib not found"; fi
done
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SDXLD_TEST_DATA="$PWD/tests/data"

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${gpu:-unknown}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if ldd "$B/server/sdxld" | grep -q "not found"; then
    ldd "$B/server/sdxld" | grep "not found"
    note "libraries: MISSING (see above)"
    status=1
fi

# ---- 1. the gpu suite ----
run_test() {   # name, time limit (s)
    local name=$1 limit=$2 t=$(date +%s)
    timeout "$limit" "$B/tests/gpu/test_$name" > "$LOG/$name.log" 2>&1
    local rc=$?
    local pass fail
    pass=$(grep -c '^ok ' "$LOG/$name.log")
    fail=$(grep -c '^not ok ' "$LOG/$name.log")
    grep -E '^not ok|^#|^1\.\.0|^Bail' "$LOG/$name.log" | head -40
    if [ $rc -eq 0 ]; then
        note "$(printf '%-12s PASS  %3d ok, %d not ok (%ds)' "$name" "$pass" "$fail" $(( $(date +%s) - t )))"
    else
        note "$(printf '%-12s FAIL  exit %d: %d ok, %d not ok (%ds; 77 = no GPU, 124 = timeout)' "$name" $rc "$pass" "$fail" $(( $(date +%s) - t )))"
        status=1
    fi
}
run_test gpu_ops 150
run_test gpu_golden 90
run_test gpu_backward 120
t=$(date +%s)
G=tests/data/tiny-sdxl-a/golden.safetensors
grads=$(python3 -c "
import json, struct
f = open('$G', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
print(' '.join(k for k in h if k.startswith('unet_grad.') or k in ('unet_dx', 'unet_dehs', 'unet_dtext')))")
if timeout 60 "$B/server/sdxld" unet --backend cuda --model tests/data/tiny-sdxl-a --in "$G" --out "$LOG/unet_bw.safetensors" \
        --backward > "$LOG/unet_bw.log" 2>&1 &&
   "$B/tests/st_compare" "$LOG/unet_bw.safetensors" "$G" 1e-3 unet_out $grads > "$LOG/unet_bw_cmp.log" 2>&1; then
    note "$(printf '%-12s PASS  123 golden gradients on the GPU within 1e-3 (TF32) (%ds)' unet_bw $(( $(date +%s) - t )))"
else
    grep -v '^ok' "$LOG/unet_bw_cmp.log" "$LOG/unet_bw.log" | head -20
    note "$(printf '%-12s FAIL  (logs unet_bw*.log)' unet_bw)"
    status=1
fi

# ---- 2. an SDXL-size model ----
if [ ! -f "$MODEL/unet/diffusion_pytorch_model.safetensors" ]; then
    t=$(date +%s)
    timeout 200 "$B/server/sdxld" init --from conf/models/sdxl-base --tokenizers-from tests/data/tiny-sdxl-a \
        --out "$MODEL" --dtype F16 > "$LOG/init.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then note "$(printf '%-12s PASS  SDXL-size F16 model in %ds' init $(( $(date +%s) - t )))"
    else note "$(printf '%-12s FAIL  exit %d (log init.log)' init $rc)"; tail -5 "$LOG/init.log"; status=1; fi
fi

# ---- 3. the benchmark ----
rows=()
for batch in 1 4 8; do
    case $batch in 1) rep=3 ;; 4) rep=2 ;; *) rep=1 ;; esac
    [ -f "$MODEL/unet/diffusion_pytorch_model.safetensors" ] || break
    left=$(( 540 - $(elapsed) ))
    if [ $left -lt 30 ]; then note "$(printf '%-12s SKIPPED (time budget spent)' "bench b$batch")"; status=1; continue; fi
    lim=$(( left < 150 ? left : 150 ))
    timeout "$lim" "$B/server/sdxld" bench --model "$MODEL" --backend cuda --width 1024 --height 1024 \
        --batch $batch --steps 4 --repeat $rep > "$LOG/bench$batch.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        note "$(printf '%-12s FAIL  exit %d (log bench%d.log)' "bench b$batch" $rc $batch)"; tail -5 "$LOG/bench$batch.log"; status=1; continue
    fi
    cat "$LOG/bench$batch.log"
    note "$(printf '%-12s PASS' "bench b$batch")"
    # | stage | batch | size | best ms | mean ms |  -> best ms per stage
    get() { awk -F'|' -v s="$1" '$2 ~ s { gsub(/ /, "", $5); print $5 }' "$LOG/bench$batch.log" | head -1; }
    text=$(get "text encoders"); unet=$(get "unet"); vae=$(get "vae decode"); e2e=$(get "end-to-end")
    load=$(sed -n 's/.*load \([0-9]*\) ms.*/\1/p' "$LOG/bench$batch.log" | head -1)
    peak=$(sed -n 's/.*peak \([0-9.]*\) MiB, now.*/\1/p' "$LOG/bench$batch.log" | head -1)
    ips=$(awk -v e="$e2e" -v b=$batch 'BEGIN { if (e > 0) printf "%.2f", b * 1000 / e; else print "-" }')
    rows+=("$(printf '| %5d | %8s | %10s | %10s | %13s | %6s | %9s | %9s |' $batch "${text:--}" "${unet:--}" "${vae:--}" "${e2e:--}" "$ips" "${peak:--}" "${load:--}")")
done

# ---- the table ----
echo
echo "sdxld GPU check: ${gpu:-unknown GPU}; $(elapsed) s in all; logs in $LOG"
for s in "${SUMMARY[@]}"; do echo "  $s"; done
if [ ${#rows[@]} -gt 0 ]; then
    echo
    echo "sdxld bench --backend cuda, 1024x1024, 4 steps, fp32 storage + TF32 (best ms of the repeats)"
    echo "| batch | text ms  | unet/step  | vae decode | e2e 4-step ms | img/s  | peak MiB  | load ms   |"
    echo "|-------|----------|------------|------------|---------------|--------|-----------|-----------|"
    for r in "${rows[@]}"; do echo "$r"; done
fi
{ for s in "${SUMMARY[@]}"; do echo "$s"; done; for r in "${rows[@]}"; do echo "$r"; done; } > "$LOG/summary.txt"
exit $status

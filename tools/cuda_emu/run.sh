#!/usr/bin/env bash
# tools/cuda_emu/run.sh [tsan] — check the logic of kernels/*.cu without a GPU.
#
# Rewrites each .cu file for host C++ (launches `k<<<g, b, smem, s>>>(args)` become
# `emu::launch(k, g, b, smem, s)(args)`; the dynamic shared-memory declaration goes),
# compiles it against the emulated CUDA headers here and runs test_kernels.cpp.  With
# `tsan`, builds with ThreadSanitizer too (slow: minutes), which reports shared-memory
# races a missing __syncthreads would cause.  Needs g++ with C++20 (std::barrier).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${TMPDIR:-/tmp}/sdxld-cuda-emu${1:+-$1}   # tsan apart: both may run at once
mkdir -p "$work"
for f in "$root"/kernels/*.cu; do
    python3 - "$f" "$work/$(basename "$f" .cu).cpp" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
s = re.sub(r'([A-Za-z_]\w*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(', lambda m: f'emu::launch({m.group(1)}, {m.group(2)})(', s, flags=re.S)
s = s.replace('extern __shared__ float smem[];', '')
open(sys.argv[2], 'w').write(s)
PY
done
flags="-std=c++20 -O1 -g -I$here -I$root/kernels -Wno-unused-result"
[ "${1:-}" = tsan ] && flags="$flags -fsanitize=thread"
g++ $flags -o "$work/test_kernels" "$here/test_kernels.cpp" "$here/emu.cpp" "$work"/*.cpp -lpthread
"$work/test_kernels"

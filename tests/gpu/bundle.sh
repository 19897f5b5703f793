#!/usr/bin/env bash
# tests/gpu/bundle.sh [BUNDLE] — build the CUDA binaries here (a machine with nvcc but no
# GPU) and pack what tests/gpu/run.sh needs into BUNDLE (default .gpu in the repository
# root, listed in .git/info/exclude), small enough to travel to a lent GPU machine:
#
#   BUNDLE/server/sdxld and its CUDA module sdxld-cuda.so (docs/cuda.md), BUNDLE/tests/gpu/test_gpu_{ops,golden,backward}, BUNDLE/tests/st_compare
#                      (same layout as a build)
#   BUNDLE/lib/*.so*   every shared library they need that is neither glibc nor CUDA
#                      (libmicrohttpd and its TLS stack, jansson, libpng, ...): the GPU
#                      machine's image lacks some of them
#
# The binaries come from a separate build folder, build-gpu, configured with
# -Dcuda=enabled -Dblas=disabled -Dsystemd=disabled: OpenBLAS alone (36 MB) would push the
# working tree past the 64 MiB a device call carries.  cuBLAS, cuBLASLt and cuDNN are not
# packed (about 1 GB); run.sh finds them on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${1:-.gpu}
BUILD=build-gpu

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" -Dcuda=enabled -Dblas=disabled -Dsystemd=disabled
fi
ninja -C "$BUILD" server/sdxld server/sdxld-cuda.so tests/gpu/test_gpu_ops tests/gpu/test_gpu_golden tests/gpu/test_gpu_backward tests/st_compare

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/server" "$BUNDLE/tests/gpu" "$BUNDLE/lib"
cp "$BUILD/server/sdxld" "$BUILD/server/sdxld-cuda.so" "$BUNDLE/server/"
cp "$BUILD/tests/gpu/test_gpu_ops" "$BUILD/tests/gpu/test_gpu_golden" "$BUILD/tests/gpu/test_gpu_backward" "$BUNDLE/tests/gpu/"
cp "$BUILD/tests/st_compare" "$BUNDLE/tests/"

# glibc, the compiler runtime and the CUDA libraries stay behind
skip='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt|libcudnn[a-z_]*|libnvrtc|libnvJitLink)\.so'
for exe in "$BUNDLE/server/sdxld" "$BUNDLE"/tests/gpu/test_gpu_*; do
    ldd "$exe" | awk '/=> \// { print $1, $3 }' | while read -r name path; do
        if [[ ! "$name" =~ $skip ]] && [ ! -e "$BUNDLE/lib/$name" ]; then
            cp -L "$path" "$BUNDLE/lib/$name"
        fi
    done
done
strip --strip-unneeded "$BUNDLE"/lib/*.so* 2>/dev/null || true

if [ "$BUNDLE" = .gpu ] && ! grep -qx '/.gpu/' .git/info/exclude 2>/dev/null; then
    mkdir -p .git/info
    echo '/.gpu/' >> .git/info/exclude
fi
du -sh "$BUNDLE"
ls "$BUNDLE/lib"

# A device call carries the working tree (tracked and untracked-not-ignored files) plus the
# bundle, 64 MiB in all: say so here, before a call is refused for it.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
bundle=$(du -sb "$BUNDLE" | cut -f1)
total=$(( (tree + bundle) / 1048576 ))
echo "what a device call carries: working tree $(( tree / 1048576 )) MiB + bundle $(( bundle / 1048576 )) MiB = $total MiB (limit 64)"
if [ "$total" -ge 64 ]; then
    echo "bundle.sh: over the 64 MiB a device call carries: shrink tracked fixtures first (the largest:)" >&2
    git ls-files -z | xargs -0 du -b 2>/dev/null | sort -rn | head -8 >&2
    exit 3
fi

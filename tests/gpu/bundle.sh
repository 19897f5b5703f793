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
# -Dcuda=enabled -Dblas=disabled -Ddnnl=disabled -Dsystemd=disabled: OpenBLAS (36 MB) or
# oneDNN (40 MB) alone would push the working tree past the 64 MiB a device call carries.  cuBLAS, cuBLASLt and cuDNN are not
# packed (about 1 GB); run.sh finds them on the GPU machine.
#
# The tracked tree alone is over that limit now (the built-in model and its teacher): the
# GPU run does not need models/, so `bundle.sh --lighten` takes it out of the index and
# ignores it (.git/info/exclude; the files stay on disk) for the device calls, and
# `bundle.sh --restore` puts it back.  Never commit in between.
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
--lighten)
    git rm -r -q --cached models
    grep -qx '/models/' .git/info/exclude 2>/dev/null || echo '/models/' >> .git/info/exclude
    echo "bundle.sh: models/ untracked and ignored for device calls; run tests/gpu/bundle.sh --restore after them"
    exit 0 ;;
--restore)
    sed -i '\#^/models/$#d' .git/info/exclude
    git reset -q -- models
    git status --short models | head -3
    exit 0 ;;
esac
BUNDLE=${1:-.gpu}
BUILD=build-gpu

OPTS=(-Dcuda=enabled -Dblas=disabled -Ddnnl=disabled -Dsystemd=disabled)
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "${OPTS[@]}"
else
    meson configure "$BUILD" "${OPTS[@]}" >/dev/null
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
    echo "bundle.sh: over the 64 MiB a device call carries: tests/gpu/bundle.sh --lighten (see above), or shrink tracked fixtures (the largest:)" >&2
    git ls-files -z | xargs -0 du -b 2>/dev/null | sort -rn | head -8 >&2
    exit 3
fi

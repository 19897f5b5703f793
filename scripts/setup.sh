#!/usr/bin/env bash
# setup.sh — install what sdxld needs on Debian 12 / Ubuntu and build it.  Idempotent:
# packages already present are left alone; the build folder is reused.
#   BUILD_DIR   (default: build)      where meson builds
#   MESON_ARGS  (default: empty)      extra options, e.g. -Dcuda=disabled
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(gcc meson ninja-build pkg-config libmicrohttpd-dev libjansson-dev libpng-dev
      libjpeg62-turbo-dev libwebp-dev
      libopenblas-dev libdnnl-dev libsystemd-dev python3 valgrind nginx-light curl dpkg-dev)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  meson setup "$BUILD_DIR" ${MESON_ARGS:-}
fi
ninja -C "$BUILD_DIR"
echo "setup: built $BUILD_DIR/server/sdxld"

#!/usr/bin/env bash
# make-deb.sh — build the Debian package sdxld_VERSION_ARCH.deb from this tree with meson
# and dpkg-deb (docs/deploy.md).  Idempotent: the build folder is reused.
#   BUILD_DIR   (default: build-deb)        a meson build folder, prefix /usr
#   OUT_DIR     (default: the build folder) where the .deb goes
#   MESON_ARGS  (default: -Dcuda=disabled)  options for a new build folder
#   JOBS        (default: ninja's)          parallel compile jobs
# Depends comes from dpkg-shlibdeps (the libraries the binary links); the maintainer
# scripts (packaging/deb/) create the sdxld user and enable sdxld.service without
# starting it.  Prints the path of the .deb.  Needs dpkg-dev (dpkg-shlibdeps).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
BUILD_DIR=${BUILD_DIR:-build-deb}
OUT_DIR=${OUT_DIR:-$BUILD_DIR}

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  meson setup "$BUILD_DIR" --prefix=/usr --buildtype=release ${MESON_ARGS:--Dcuda=disabled} >/dev/null
fi
prefix=$(meson introspect --buildoptions "$BUILD_DIR" |
         python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
[ "$prefix" = /usr ] || { echo "make-deb: $BUILD_DIR has prefix $prefix, not /usr" >&2; exit 1; }
# shellcheck disable=SC2086
ninja -C "$BUILD_DIR" ${JOBS:+-j$JOBS} server/sdxld systemd/sdxld.1 >/dev/null

# dpkg-shlibdeps wants the tree at debian/PACKAGE under the folder it runs in.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/debian/sdxld
meson install -C "$BUILD_DIR" --destdir "$root" --no-rebuild --quiet >/dev/null
gzip -9n "$root/usr/share/man/man1/sdxld.1"
mkdir -p "$root/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
(cd "$root" && find etc -type f -printf '/%p\n' | sort) > "$root/DEBIAN/conffiles"

version=$("$BUILD_DIR/server/sdxld" --version | cut -d' ' -f2)
arch=$(dpkg --print-architecture)
printf 'Source: sdxld\n\nPackage: sdxld\nArchitecture: any\n' > "$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e"$root/usr/bin/sdxld" | sed -n 's/^shlibs:Depends=//p')
cat > "$root/DEBIAN/control" <<CONTROL
Package: sdxld
Version: $version
Architecture: $arch
Maintainer: sdxld developers <sdxld@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Recommends: systemd
Suggests: nginx-light | nginx
Section: graphics
Priority: optional
Homepage: https://github.com/sdxld/sdxld
Description: SDXL image generation daemon (HTTP) with a built-in model
 sdxld serves a DMD2-distilled 4-step SDXL text-to-image generator over HTTP and runs
 distillation jobs.  It ships a small built-in model (shapes), so it serves right after
 installation.  sdxld.service is enabled, not started: edit /etc/sdxld/sdxld.conf,
 then systemctl start sdxld (or sdxld@N for GPU N).
CONTROL

mkdir -p "$OUT_DIR"
deb=$OUT_DIR/sdxld_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz -z1 --build "$root" "$deb" >/dev/null
case $deb in /*) echo "$deb" ;; *) echo "$SRC/$deb" ;; esac

#!/usr/bin/env bash
# test_deb.sh — the Debian package end to end (about a minute): scripts/make-deb.sh
# builds it in a fresh build folder OUTSIDE the source tree, whose binary must find the
# built-in model from there (uninstalled); then scripts/check-deb.sh installs the .deb
# into a throwaway root, checks that it serves, removes and purges it (docs/deploy.md).
# TAP; the whole test is a skip without dpkg-dev, readelf or curl, or when neither root
# nor `unshare -r` is available.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
for tool in dpkg-deb dpkg-shlibdeps readelf curl; do
  command -v "$tool" >/dev/null || { echo "1..0 # SKIP $tool not installed"; exit 0; }
done
if [ "$(id -u)" -ne 0 ] && ! unshare -r true 2>/dev/null; then
  echo "1..0 # SKIP needs root or unshare -r for dpkg --root"; exit 0
fi
n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; return "$1"; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

deb=$(BUILD_DIR="$T/b" OUT_DIR="$T" JOBS=1 "$REPO/scripts/make-deb.sh" 2>"$T/make.log")
ok $? "make-deb.sh builds $(basename "$deb") from a build folder outside the source tree" ||
  sed 's/^/# /' "$T/make.log"

unset SDXLD_MODEL
"$T/b/server/sdxld" generate --help | grep -qF "built-in model ($REPO/models/shapes-small)"
ok $? "that build folder's binary takes the built-in model from the source tree"
(cd "$T" && "$T/b/server/sdxld" generate --prompt "a red circle in the center, on a white background" \
   --seed 1 -o circle.png >"$T/gen.out" 2>"$T/gen.log") && [ "$(head -c 4 "$T/circle.png" | tail -c 3)" = PNG ]
ok $? "and makes an image with it" || sed 's/^/# /' "$T/gen.log"

# check-deb.sh's own TAP lines (unnumbered), renumbered into this plan
if [ -f "$deb" ]; then
  "$REPO/scripts/check-deb.sh" "$deb" >"$T/check.log" 2>&1
  rc=$?
  while IFS= read -r line; do
    case $line in
      "ok - "*) n=$((n + 1)); echo "ok $n - ${line#ok - }" ;;
      "not ok - "*) n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - ${line#not ok - }" ;;
      "#"*) echo "$line" ;;
      *) echo "# $line" ;;
    esac
  done <"$T/check.log"
  ok $rc "check-deb.sh passes"
fi
echo "1..$n"
[ $fails -eq 0 ]

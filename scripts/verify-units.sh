#!/usr/bin/env bash
# verify-units.sh ROOT — `systemd-analyze verify` on the sdxld units installed under ROOT
# (a `meson install --destdir ROOT` or an unpacked .deb), as they would be checked once
# ROOT is /: ExecStart's binary is looked up under ROOT and `man sdxld` in ROOT's man
# pages.  Exit status: 0 clean, 1 not (the complaints on stderr), 77 systemd-analyze
# missing (a skip for TAP callers).
set -uo pipefail
ROOT=$(realpath "${1:?usage: verify-units.sh ROOT}")
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed"; exit 77; }
mapfile -t units < <(find "$ROOT" -path '*/systemd/system/sdxld*.service' -type f | sort)
[ ${#units[@]} -eq 2 ] || { echo "want sdxld.service and sdxld@.service under $ROOT, found: ${units[*]}" >&2; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for u in "${units[@]}"; do
  sed -E "s#^ExecStart=(/[^ ]*)#ExecStart=$ROOT\1#" "$u" >"$T/$(basename "$u")"
done
man=$(find "$ROOT" -path '*/man1/sdxld.1*' -type f | head -1)
man_args=(--man=no)
if [ -n "$man" ] && command -v man >/dev/null; then
  export MANPATH
  MANPATH=$(dirname "$(dirname "$man")")
  man_args=()
fi
out=$(cd "$T" && systemd-analyze verify "${man_args[@]}" ./*.service 2>&1)
rc=$?
# verify exits 0 on some warnings: any line naming an sdxld unit is a failure too.
if [ $rc -ne 0 ] || grep -q 'sdxld' <<<"$out"; then
  echo "$out" >&2
  exit 1
fi

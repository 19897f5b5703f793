#!/usr/bin/env bash
# tests/fuzz/campaign.sh MINUTES [HARNESS...] — the long fuzzing campaign (a benchmark, not
# CI): each harness (default: all, tests/fuzz/lib.sh) for MINUTES with a fresh random seed,
# growing its corpus in build-fuzz/corpus/NAME from one run to the next.  Prints one table
# row per run (the columns of docs/reliability.md) and appends it to build-fuzz/campaign.md;
# stops at the first failure, whose reproducer stays in build-fuzz/crash-NAME-*.
set -euo pipefail
cd "$(dirname "$0")/../.."
M=${1:?usage: campaign.sh MINUTES [HARNESS...]}
shift
. tests/fuzz/lib.sh
fuzz_build
[ $# -gt 0 ] || set -- "${FUZZ_HARNESSES[@]}"
for h in "$@"; do
    log="$B/campaign-$h.log"
    fuzz_one "$h" $((M * 60)) 0 > "$log" || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | awk '{print $2 " | " $4}')
    found=nothing
    fuzz_found "$h" && found="FAILURE: $(ls "$B"/crash-"$h"-* | grep -v -- -slow-unit- | head -1)"
    [ -z "$(fuzz_slow "$h")" ] || echo "campaign: $h: slow inputs to look at: $(fuzz_slow "$h" | tr '\n' ' ')" >&2
    row="| \`$h\` | $(date +%F) ($M min) | ${execs:-?} | ${rate:-?} | ${cov:-? | ?} | $found |"
    echo "$row" | tee -a "$B/campaign.md"
    [ "$found" = nothing ] || exit 1
done

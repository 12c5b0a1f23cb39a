#!/usr/bin/env bash
# Runs libFuzzer targets for a while each; fails if any finds a crash, a leak,
# undefined behaviour or a broken oracle.
#   tests/fuzz/run.sh BUILD SECONDS TARGET...
# Each target starts from its seed corpus (tests/fuzz/corpus/TARGET/, never
# written to) plus what earlier runs found (BUILD/corpus/TARGET/, where new
# inputs go), with tests/fuzz/TARGET.dict when there is one. A crashing input
# is saved as BUILD/artifacts/TARGET-crash-*; reproduce it with
# `BUILD/fuzz/TARGET FILE`.
set -uo pipefail
cd "$(dirname "$0")/../.."
build=$1 seconds=$2
shift 2
failed=()
mkdir -p "$build/artifacts"
for t in "$@"; do
    seeds=tests/fuzz/corpus/$t work=$build/corpus/$t log=$build/fuzz-$t.log
    mkdir -p "$work"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$build/artifacts/$t-")
    [ -f "tests/fuzz/$t.dict" ] && args+=(-dict="tests/fuzz/$t.dict")
    echo "  FUZZ  $t for ${seconds}s"
    "$build/fuzz/$t" "${args[@]}" "$work" "$seeds" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    echo "        ${execs:-?} executions, ${rate:-?}/s, corpus $(find "$work" -type f | wc -l) inputs (log: $log)"
    if [ "$rc" -ne 0 ]; then
        grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)|runtime error' "$log" | head -20
        failed+=("$t")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi

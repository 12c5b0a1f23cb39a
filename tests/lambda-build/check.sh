#!/usr/bin/env bash
# Checks built Lambda packages (scripts/build-lambda.sh; docs/DEVELOPMENT.md, "Lambda build"):
# each function.zip holds exactly one entry, `bootstrap`, mode 0755, an x86-64 (or, with
# KOUMPA_LAMBDA_ARCH=aarch64, ARM aarch64) ELF that passes scripts/lambda/check-elf.sh, and that,
# unpacked alone in an empty directory with an empty environment, answers `bootstrap routes --json`
# with the route table naming the function. Not part of `make test` (building curl is slow).
#   tests/lambda-build/check.sh [build/lambda/NAME/function.zip ...]   default: all six
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=${KOUMPA_LAMBDA_ARCH:-x86-64}
[ "$arch" = aarch64 ] && arch_re='ARM aarch64' || arch_re='x86-64'

mapfile -t six < <(scripts/lambda/function-names.sh)
zips=("$@")
if [ ${#zips[@]} -eq 0 ]; then
    for n in "${six[@]}"; do zips+=("build/lambda/$n/function.zip"); done
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL $1: $2" >&2; exit 1; }

for z in "${zips[@]}"; do
    [ -f "$z" ] || fail "$z" "missing"
    name=$(basename "$(dirname "$z")")
    entries=$(zipinfo -1 "$z")
    [ "$entries" = bootstrap ] || fail "$z" "entries are '$entries', want only 'bootstrap'"
    zipinfo "$z" bootstrap | grep -q '^-rwxr-xr-x' || fail "$z" "bootstrap mode: $(zipinfo "$z" bootstrap)"
    dir="$tmp/$name" && mkdir -p "$dir"
    unzip -q "$z" -d "$dir"
    file -b "$dir/bootstrap" | grep -q "ELF 64-bit LSB .*$arch_re" || fail "$z" "$(file -b "$dir/bootstrap")"
    scripts/lambda/check-elf.sh "$dir/bootstrap" >/dev/null || fail "$z" "check-elf"
    (cd "$dir" && env -i ./bootstrap routes --json) >"$tmp/routes.json" || fail "$z" "bootstrap routes --json failed"
    # the route table: a non-empty JSON array of {function, method, path, route_key}, over the six
    # functions; daily-bonus serves the schedule, no route
    python3 - "$tmp/routes.json" "$name" "${six[@]}" <<'PY' || fail "$z" "routes --json: unexpected table"
import json, sys
six = set(sys.argv[3:])
assert len(six) == 6, six
table = json.load(open(sys.argv[1]))
assert isinstance(table, list) and table, "empty"
assert all(r["function"] in six and r["route_key"] == r["method"] + " " + r["path"] for r in table)
assert sys.argv[2] in six, sys.argv[2] + " is not one of the six"
assert sys.argv[2] == "daily-bonus" or any(r["function"] == sys.argv[2] for r in table)
PY
    [ "$(ls -A "$dir")" = bootstrap ] || fail "$z" "the bootstrap left files behind: $(ls -A "$dir")"
    echo "ok $z ($(stat -c %s "$z") bytes zipped; $(objdump -T "$dir/bootstrap" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1))"
done

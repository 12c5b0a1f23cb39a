#!/usr/bin/env bash
# The shipped artifact's end-to-end run: the `bootstrap` of the built function.zip files (the same
# executable in all six; this checks it) unpacked and run through tests/integration/lambda.test.mjs
# on the fake Runtime API (KOUMPA_BOOTSTRAP), on SQLite and files, then on DynamoDB + S3 + Secrets
# Manager (KOUMPA_TEST_BACKEND=aws: moto behind the SigV4-verifying front). `make lambda-e2e` runs it
# after `make lambda`; CI runs it (.ci/run).
#   tests/lambda-build/e2e.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

first=""
for n in $(scripts/lambda/function-names.sh); do
    z="build/lambda/$n/function.zip"
    [ -f "$z" ] || { echo "FAIL $z: missing (make lambda)" >&2; exit 1; }
    mkdir -p "$tmp/$n" && unzip -q "$z" -d "$tmp/$n"
    if [ -z "$first" ]; then
        first="$tmp/$n/bootstrap"
    else
        cmp -s "$first" "$tmp/$n/bootstrap" || { echo "FAIL $z: another bootstrap than the first zip's" >&2; exit 1; }
    fi
done
export KOUMPA_BOOTSTRAP="$first"
tests/run-integration.sh "$build" tests/integration/lambda.test.mjs
KOUMPA_TEST_BACKEND=aws tests/run-integration.sh "$build" tests/integration/lambda.test.mjs

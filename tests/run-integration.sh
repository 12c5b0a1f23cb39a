#!/bin/sh
# run-integration.sh BUILD_DIR [FILE...] - runs the black-box tests (tests/integration/*.test.mjs,
# or the FILEs given) against BUILD_DIR/koumpa with node's built-in test runner.
# One test file per core plus one (the files mostly wait on their servers: on 2 cores,
# 3 files at a time finish the suite in 2.5 min instead of 3.7); one at a time under a
# wrapper (KOUMPA_TEST_WRAPPER, e.g. valgrind: heavy). KOUMPA_TEST_CONCURRENCY overrides either (make
# valgrind sets 3: the tests mostly wait on the servers, so three files share the
# two cores, and the timeouts under a wrapper are generous).
set -eu
BUILD_DIR=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."
if [ ! -x "$BUILD_DIR/koumpa" ]; then
    echo "run-integration.sh: $BUILD_DIR/koumpa not found; build it first (make $BUILD_DIR/koumpa)" >&2
    exit 2
fi
# a hung test fails after TIMEOUT ms instead of blocking the run
if [ -n "${KOUMPA_TEST_WRAPPER:-}" ]; then
    CONCURRENCY=${KOUMPA_TEST_CONCURRENCY:-1}
    TIMEOUT=${KOUMPA_TEST_TIMEOUT:-1800000}
else
    CONCURRENCY=${KOUMPA_TEST_CONCURRENCY:-$(($(nproc 2>/dev/null || echo 2) + 1))}
    TIMEOUT=${KOUMPA_TEST_TIMEOUT:-300000}
fi
export KOUMPA_BUILD="$BUILD_DIR"
# node 20 runs every *.test.mjs under the given directory
if [ $# -eq 0 ]; then set -- tests/integration/; fi
exec node --test --test-concurrency="$CONCURRENCY" --test-timeout="$TIMEOUT" "$@"

#!/bin/sh
# run-unit.sh BUILD_DIR - runs every BUILD_DIR/tests/test_* (cmocka binaries)
# from the repository root, prints one line per binary (and the output of
# failing ones), then a last line "N passed, M failed" counting cmocka tests.
# A binary that fails without a cmocka summary (crash, sanitizer report,
# leak) counts as one failed test. Exit status: 0 only if nothing failed.
set -u
BUILD_DIR=${1:-build}
cd "$(dirname "$0")/.." || exit 2

passed=0
failed=0
found=0
TIMEOUT=""
if command -v timeout >/dev/null 2>&1; then
    TIMEOUT="timeout 600"
fi

for bin in "$BUILD_DIR"/tests/test_*; do
    if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then continue; fi
    found=1
    name=$(basename "$bin")
    out=$($TIMEOUT "$bin" 2>&1)
    rc=$?
    # cmocka: "[  PASSED  ] 9 test(s)." and "[  FAILED  ] 2 test(s), listed below:"
    p=$(printf '%s\n' "$out" | sed -n 's/.*\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' | tail -n 1)
    f=$(printf '%s\n' "$out" | sed -n 's/.*\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' | tail -n 1)
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # crashed, timed out, or a sanitizer/leak report after the tests
    fi
    if [ "$rc" -eq 0 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        p=1 # not a cmocka binary: one test that passed
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -eq 0 ] && [ "$f" -eq 0 ]; then
        echo "PASS $name ($p)"
    else
        echo "FAIL $name (exit $rc, $p passed, $f failed)"
        printf '%s\n' "$out" | sed 's/^/    /'
    fi
done

if [ "$found" -eq 0 ]; then
    echo "run-unit.sh: no test binaries in $BUILD_DIR/tests" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

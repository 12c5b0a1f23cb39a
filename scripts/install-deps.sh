#!/usr/bin/env bash
# Installs what Koumpa needs on Debian/Ubuntu, only what is missing.
#   scripts/install-deps.sh          build + run dependencies
#   scripts/install-deps.sh --test   also the test tools (cmocka, valgrind, gcovr, wrk, nginx-light
#                                    for make bench's reference, clang and its
#                                    lint tools and libFuzzer runtime, cppcheck, libfaketime,
#                                    node packages, moto_server for the AWS tests, chromium for
#                                    the browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential pkg-config libevent-dev libjansson-dev libyajl-dev libssl-dev libsqlite3-dev
      libcurl4-openssl-dev libsodium-dev libzip-dev liburing-dev zlib1g-dev ca-certificates)
if [ "${1:-}" = "--test" ]; then
    # nginx-light: make bench's reference (a fixed 200 beside GET /v1/me); bench/run.sh starts its own
    pkgs+=(libcmocka-dev valgrind gcovr wrk nginx-light nodejs npm curl clang clang-format clang-tidy
           libclang-rt-dev cppcheck libfaketime python3-venv)
    # Debian's chromium for the browser suite (tests/browser/, make bench-ui): Playwright's own
    # browser download is not used (playwright-core with executablePath /usr/bin/chromium)
    [ -x /usr/bin/chromium ] || pkgs+=(chromium)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from elsewhere than Debian's packages: a working `node` is enough
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs/}")
    missing=("${missing[@]/npm/}")
fi
read -r -a missing <<< "${missing[*]:-}"

if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--test" ]; then
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    fi
    # moto_server, the local AWS peer of the AWS tests (tests/integration/aws-front.mjs): moto 5 from
    # PyPI in its own virtualenv when none is on the PATH
    moto_venv=${KOUMPA_MOTO_VENV:-$HOME/.cache/koumpa/moto}
    if ! command -v moto_server >/dev/null && [ ! -x "$moto_venv/bin/moto_server" ]; then
        # best effort: without PyPI the moto part of the AWS tests skips and says so
        if ! { python3 -m venv "$moto_venv" && "$moto_venv/bin/pip" install --quiet 'moto[server]>=5,<6'; }; then
            echo "install-deps: moto_server could not be installed; the AWS tests that need it will skip" >&2
        fi
    fi
fi

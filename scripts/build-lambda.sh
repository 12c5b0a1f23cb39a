#!/usr/bin/env bash
# Builds one Lambda function's deployment package, build/lambda/NAME/function.zip: `bootstrap`
# (the six functions' one executable, src/cli/lambda.c) at the zip's root, mode 0755, for the
# provided.al2023 runtime (docs/DEVELOPMENT.md, "Lambda build").
#   scripts/build-lambda.sh NAME        NAME: generate-app, stripe-webhook, daily-bonus, get-user,
#                                       list-projects, admin-update-plan
# AL2023 has glibc 2.34 and Debian 12 builds against 2.36, so the bootstrap links every library
# statically (libcurl and libzip from Debian's source packages, scripts/lambda-deps.sh; Debian's
# `.a` for the rest) and dynamically only libc and libm; the build fails if it imports a glibc
# symbol above GLIBC_2.34 or needs any other shared library (scripts/lambda/check-elf.sh).
# The objects are `make`'s, compiled in build-lambda/ (-O2, sections for --gc-sections); the zip is
# reproducible: the bootstrap's mtime is SOURCE_DATE_EPOCH (default: the last commit's time).
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:?usage: scripts/build-lambda.sh NAME}
# NAME must be one of the code's six functions (kp_lambda_function_names, host/lambda/functions.c)
if ! scripts/lambda/function-names.sh | grep -qx -- "$name"; then
    echo "build-lambda: unknown function '$name' (src/host/lambda/functions.c names the six)" >&2
    exit 2
fi
out_build=build-lambda
jobs=${JOBS:-2}

prefix=$(scripts/lambda-deps.sh)
libdir=/usr/lib/$(${CC:-cc} -print-multiarch)

# The objects, with make's flags and warnings; libcurl's and libzip's headers from the built prefix.
make -s --no-print-directory -j"$jobs" BUILD="$out_build" CFLAGS="-O2 -ffunction-sections -fdata-sections" \
    PKG_CFLAGS="-I$prefix/include $(pkg-config --cflags jansson yajl openssl sqlite3 libsodium libevent)" \
    "$out_build/libkoumpa.a" "$out_build/obj/src/cli/lambda.o" "$out_build/obj/src/cli/backend.o"
if [ scripts/lambda/arc4random.c -nt "$out_build/arc4random.o" ]; then
    ${CC:-cc} -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wmissing-prototypes -O2 \
        -c scripts/lambda/arc4random.c -o "$out_build/arc4random.o"
fi

boot="$out_build/bootstrap"
static_libs=("$prefix/lib/libcurl.a" "$prefix/lib/libzip.a")
for l in event_pthreads event_core jansson yajl_s sqlite3 sodium ssl crypto z; do
    static_libs+=("$libdir/lib$l.a")
done
inputs=("$out_build/obj/src/cli/lambda.o" "$out_build/obj/src/cli/backend.o" "$out_build/arc4random.o"
        "$out_build/libkoumpa.a" "${static_libs[@]}")
# relinked (and checked) only when an input changed: build-all-lambdas.sh links once for the six
if [ ! -f "$boot" ] || [ -n "$(find "${inputs[@]}" -newer "$boot")" ]; then
    echo "  LD    $boot (static but libc, libm)"
    ${CC:-cc} -O2 -o "$boot.tmp" "${inputs[@]}" -lpthread -lm -ldl -Wl,--gc-sections -Wl,-O1 -Wl,--as-needed -s
    scripts/lambda/check-elf.sh "$boot.tmp"
    mv "$boot.tmp" "$boot"
fi


dest="build/lambda/$name"
stage="$dest/stage"
rm -rf "$stage" && mkdir -p "$stage"
cp "$boot" "$stage/bootstrap"
chmod 0755 "$stage/bootstrap"
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}
touch -d "@$epoch" "$stage/bootstrap"
rm -f "$dest/function.zip"
(cd "$stage" && TZ=UTC zip -q -X -9 ../function.zip bootstrap)
rm -rf "$stage"
echo "build/lambda/$name/function.zip: $(stat -c %s "$dest/function.zip") bytes"

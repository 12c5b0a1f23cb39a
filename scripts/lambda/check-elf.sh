#!/usr/bin/env bash
# Checks that a Lambda bootstrap runs on provided.al2023 (glibc 2.34; docs/DEVELOPMENT.md,
# "Lambda build"): an ELF executable that imports no glibc symbol version above GLIBC_2.34 and
# needs no shared library but libc, libm and the dynamic loader. Prints the figures; exit 1 if not.
#   scripts/lambda/check-elf.sh PATH/bootstrap
set -euo pipefail
boot=${1:?usage: check-elf.sh PATH/bootstrap}
max_glibc=${KOUMPA_LAMBDA_MAX_GLIBC:-2.34}
fail() { echo "check-elf: $boot: $*" >&2; exit 1; }

file -b "$boot" | grep -q '^ELF 64-bit LSB .*executable' || fail "not an ELF executable: $(file -b "$boot")"

# the highest GLIBC_x.y among the imported symbol versions
top=$(objdump -T "$boot" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -n "$top" ] || fail "imports no glibc symbol (fully static?)"
if [ "$(printf '%s\n%s\n' "$top" "$max_glibc" | sort -V | tail -1)" != "$max_glibc" ]; then
    objdump -T "$boot" | grep -E "GLIBC_$top" | sed 's/^/    /' >&2
    fail "imports GLIBC_$top, above GLIBC_$max_glibc"
fi

# NEEDED entries (readelf: no execution) and the loader's view (ldd)
needed=$(readelf -d "$boot" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
for lib in $needed; do
    case "$lib" in
    libc.so.6 | libm.so.6 | ld-linux-*.so.*) ;;
    *) fail "needs $lib (only libc.so.6 and libm.so.6 are allowed)" ;;
    esac
done
while read -r line; do
    case "$line" in
    linux-vdso.so.* | libc.so.6\ * | libm.so.6\ * | /lib*/ld-linux-*) ;;
    *) fail "ldd: $line" ;;
    esac
done < <(ldd "$boot")
echo "check-elf: $boot: ok (needs: ${needed% }; newest glibc symbol: GLIBC_$top; $(stat -c %s "$boot") bytes)"

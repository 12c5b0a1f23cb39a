#!/usr/bin/env bash
# Builds the static libraries the Lambda bootstrap links that Debian does not ship as
# usable `.a` files (docs/DEVELOPMENT.md, "Lambda build"), once, into build/lambda-deps/:
#   - libcurl from Debian's own source package (`apt-get source`, all Debian patches applied):
#     HTTP/HTTPS and SMTP (the mailer) over OpenSSL + zlib, nothing else; Debian's libcurl.a needs
#     gssapi, p11-kit and sasl, which have no `.a`. Its default CA bundle is AL2023's
#     (KOUMPA_CA_BUNDLE, default /etc/pki/tls/certs/ca-bundle.crt): every curl handle uses it
#     unless KOUMPA_CA_BUNDLE is also set at run time (src/core/curl_defaults.c).
#   - libzip from Debian's source package (Debian ships no libzip.a), deflate only.
# The versions are those of the installed -dev packages, so the headers `make` compiles against
# match. Needs root (or sudo) for the deb-src entry and apt-get update/source's build tools.
#   scripts/lambda-deps.sh            prints the prefix (build/lambda-deps/<arch>) once built
set -euo pipefail
cd "$(dirname "$0")/.."

arch=$(dpkg --print-architecture)
deps="$PWD/build/lambda-deps/$arch"
prefix="$deps/prefix"
ca_bundle=${KOUMPA_CA_BUNDLE:-/etc/pki/tls/certs/ca-bundle.crt}
jobs=${JOBS:-2}
# no build path in the objects (curl's __FILE__s), so the bootstrap is the same from any checkout
cflags="-O2 -ffile-prefix-map=$deps/="
log() { echo "lambda-deps: $*" >&2; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# apt's sources list only `deb` entries: add `deb-src` for the same URIs and suites (deb822 files
# in sources.list.d, as on Debian 12, or one-line sources.list) so `apt-get source` works.
ensure_deb_src() {
    if apt-get source --print-uris curl >/dev/null 2>&1; then return; fi
    local out=/etc/apt/sources.list.d/koumpa-deb-src.sources
    log "adding deb-src entries ($out)"
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            [ "$f" = "$out" ] && continue
            # each stanza with Types: deb, rewritten to Types: deb-src
            awk 'BEGIN { RS = ""; ORS = "\n\n" }
                 /(^|\n)Types:[^\n]*deb([ \n]|$)/ && /debian/ {
                     sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f"
        done
    } | $sudo tee "$out" >/dev/null
    # one-line format (older images)
    if [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list | $sudo tee /etc/apt/sources.list.d/koumpa-deb-src.list >/dev/null
    fi
    $sudo apt-get update -qq
}

# `apt-get source` of the version the -dev package was built from, into $deps/src.
fetch_source() {
    local srcpkg=$1 devpkg=$2 ver dir
    ver=$(dpkg-query -W -f='${source:Version}' "$devpkg")
    dir="$deps/src/$srcpkg-$ver"
    if [ ! -f "$dir/.extracted" ]; then
        ensure_deb_src
        rm -rf "$dir" && mkdir -p "$dir"
        log "apt-get source $srcpkg=$ver"
        (cd "$dir" && apt-get source -q "$srcpkg=$ver") >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
        touch "$dir/.extracted"
    fi
    # the unpacked tree: the only directory in $dir
    find "$dir" -mindepth 1 -maxdepth 1 -type d | head -1
}

# libcurl: built once per CA bundle path (compiled in as libcurl's default CURLOPT_CAINFO) and flags
curl_key="$ca_bundle $cflags"
curl_built() { [ -f "$prefix/lib/libcurl.a" ] && [ "$(cat "$deps/curl-built-with" 2>/dev/null)" = "$curl_key" ]; }

# Only the library and its headers (no curl tool, docs or tests), only what Koumpa uses: HTTP(S) and
# SMTP(S) with basic auth over OpenSSL + zlib. No dependency tracking (a one-off build).
build_curl() {
    local src=$1
    log "building libcurl in $src"
    rm -rf "$deps/curl-build" && mkdir -p "$deps/curl-build"
    (cd "$deps/curl-build" &&
        "$src/configure" -q CFLAGS="$cflags" --prefix="$prefix" --disable-shared --enable-static --with-pic \
            --disable-dependency-tracking \
            --with-openssl --with-zlib --with-ca-bundle="$ca_bundle" --without-ca-path \
            --enable-http --enable-smtp --enable-threaded-resolver \
            --disable-ftp --disable-file --disable-ldap --disable-ldaps --disable-rtsp --disable-dict \
            --disable-telnet --disable-tftp --disable-pop3 --disable-imap --disable-gopher --disable-mqtt \
            --disable-smb --disable-manual --disable-ntlm-wb --disable-libcurl-option \
            --disable-ntlm --disable-kerberos-auth --disable-negotiate-auth --disable-aws --disable-doh \
            --disable-alt-svc --disable-hsts --disable-cookies --disable-netrc --disable-unix-sockets \
            --without-libpsl --without-nghttp2 --without-nghttp3 --without-ngtcp2 --without-libidn2 \
            --without-brotli --without-zstd --without-librtmp --without-libssh2 --without-libssh \
            --without-gssapi --without-libgsasl &&
        make -s -j"$jobs" -C lib libcurl.la && make -s -C lib install-libLTLIBRARIES &&
        make -s -C include install) \
        >"$deps/curl-build.log" 2>&1 || { tail -30 "$deps/curl-build.log" >&2; exit 1; }
    echo "$curl_key" >"$deps/curl-built-with"
}

# The library only (no tools, tests, regress, examples, docs), deflate only.
build_libzip() {
    local src=$1
    log "building libzip in $src"
    rm -rf "$deps/libzip-build" && mkdir -p "$deps/libzip-build"
    (cd "$deps/libzip-build" &&
        cmake -Wno-dev -S "$src" -B . -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="$cflags" \
            -DCMAKE_INSTALL_PREFIX="$prefix" \
            -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=OFF \
            -DENABLE_BZIP2=OFF -DENABLE_LZMA=OFF -DENABLE_COMMONCRYPTO=OFF \
            -DENABLE_GNUTLS=OFF -DENABLE_MBEDTLS=OFF -DENABLE_OPENSSL=OFF -DENABLE_WINDOWS_CRYPTO=OFF \
            -DBUILD_TOOLS=OFF -DBUILD_REGRESS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_DOC=OFF &&
        make -s -j"$jobs" && make -s install) >"$deps/libzip-build.log" 2>&1 ||
        { tail -30 "$deps/libzip-build.log" >&2; exit 1; }
}

# the build's tools (not in scripts/install-deps.sh: only the Lambda build needs them)
tools=()
for t in dpkg-source:dpkg-dev cmake:cmake zip:zip unzip:unzip file:file; do
    command -v "${t%%:*}" >/dev/null || tools+=("${t#*:}")
done
[ ${#tools[@]} -eq 0 ] || $sudo apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
# The sources first (apt-get may have to add deb-src and update, once), then both builds at once:
# curl's configure runs on one core while libzip compiles on the other.
curl_src="" zip_src=""
curl_built || curl_src=$(fetch_source curl libcurl4-openssl-dev)
[ -f "$prefix/lib/libzip.a" ] || zip_src=$(fetch_source libzip libzip-dev)
pids=()
[ -z "$curl_src" ] || { build_curl "$curl_src" & pids+=($!); }
[ -z "$zip_src" ] || { build_libzip "$zip_src" & pids+=($!); }
for p in "${pids[@]}"; do wait "$p"; done
echo "$prefix"

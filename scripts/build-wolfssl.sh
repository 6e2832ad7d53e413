#!/usr/bin/env bash
# Build wolfSSL's DTLS 1.3 example client and server, the DTLS 1.3 interop
# peer of issue 11, from Debian's source package (Debian's libwolfssl is
# built without DTLS 1.3):
#   build-wolfssl.sh              build, or reuse the cached build; prints its directory
#   build-wolfssl.sh --print-dir  print the cache directory of this build and exit
#                                 (no work; tests/helpers/wolfssl.py asks this)
# The build is cached outside the checkout, in
#   ${LONGTLS_PEERS_DIR:-$HOME/.cache/longtls-peers}/wolfssl-<version>-dtls13-<key>/
# where <key> hashes the version, the configure flags and the key-log shim,
# so a second run does no work at all (no apt, no compiler) and a change of
# flags builds afresh beside the old build. Fails loudly (non-zero, a clear
# message, the tail of the build log) when it cannot build. Called by
# scripts/install-peers.sh (`make peers`). docs/interop-wolfssl.md says how
# tests drive the result.
set -euo pipefail

log() { echo "build-wolfssl: $*"; }
die() { echo "build-wolfssl: ERROR: $*" >&2; exit 1; }

WOLFSSL_VERSION=5.5.4
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KEYLOG_SHIM=$HERE/wolfssl-keylog.c

# Every flag and why (see also docs/interop-wolfssl.md).
CONFIGURE_FLAGS=(
    # issue 11: DTLS, DTLS 1.3 (RFC 9147), connection IDs (RFC 9146 / RFC 9147
    # §9), static library so the examples are real binaries, not libtool
    # wrappers. --enable-dtls13 also turns on the stateless HelloRetryRequest
    # cookie (WOLFSSL_SEND_HRR_COOKIE): the server answers every first
    # ClientHello with an HRR carrying a cookie.
    --enable-dtls --enable-dtls13 --enable-dtlscid --disable-shared
    # X25519 key exchange (off by default in 5.5.4); secp256r1 is on by default.
    --enable-curve25519
    # lets the examples take an MTU: `-u<bytes>` calls wolfSSL_CTX_dtls_set_mtu,
    # for the small-MTU fragmentation tests.
    --enable-dtls-mtu
    # TLS_AES_128_CCM_SHA256 (AES-GCM, AES-256-GCM and ChaCha20-Poly1305 are on
    # by default): every AEAD whose record-number mask longtls computes.
    --enable-aesccm
    # NewSessionTicket after the handshake (a post-handshake message that
    # longtls must ACK); server `--send-ticket` sends another one later.
    --enable-session-ticket
    # post-handshake client authentication (server -Q, client -Q).
    --enable-postauth
    # server_name: the client's -S <name>; lets the server log it.
    --enable-sni
    # wolfCrypt's own test and benchmark programs are not needed: faster build.
    --disable-crypttests
)
# The key log (wolfssl-keylog.c): compile the TLS 1.3 secret callback into the
# library and wrap wolfSSL_new so that the examples install it.
CONFIGURE_ENV=(CPPFLAGS=-DHAVE_SECRET_CALLBACK LDFLAGS=-Wl,--wrap=wolfSSL_new)

# (HOME may be unset in a bare CI environment: take the user's home then)
PEERS_DIR=${LONGTLS_PEERS_DIR:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/longtls-peers}
key=$(
    {
        echo "$WOLFSSL_VERSION"
        printf '%s\n' "${CONFIGURE_FLAGS[@]}" "${CONFIGURE_ENV[@]}"
        cat "$KEYLOG_SHIM"
    } | sha256sum | cut -c1-12
)
BUILD_DIR=$PEERS_DIR/wolfssl-$WOLFSSL_VERSION-dtls13-$key
SRC_DIR=$BUILD_DIR/wolfssl-$WOLFSSL_VERSION
STAMP=$BUILD_DIR/BUILD-INFO

if [[ ${1:-} == --print-dir ]]; then
    echo "$BUILD_DIR"
    exit 0
elif [[ $# -gt 0 ]]; then
    die "unknown argument '$1' (usage: build-wolfssl.sh [--print-dir])"
fi

is_built() {
    [[ -f $STAMP && -x $SRC_DIR/examples/server/server && -x $SRC_DIR/examples/client/client ]]
}

if is_built; then
    log "ok: cached $(head -n1 "$STAMP") in $BUILD_DIR"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) for apt to build wolfSSL"
    SUDO=(sudo -n)
fi

APT_UPDATED=0
apt_update() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    APT_UPDATED=1
}

# Debian's source packages need a deb-src entry. Add one for the release this
# machine runs, mirroring its binary entries (same mirror, suites, key), so
# `apt-get source` sees the same (security-patched) versions that apt
# installs from. A separate file, so the distribution's own list is untouched.
DEB_SRC_LIST=/etc/apt/sources.list.d/longtls-deb-src.sources
has_wolfssl_source() {
    # (not `apt-cache ... | grep -q`: grep's early exit fails the pipe under pipefail)
    local out
    out=$(apt-cache showsrc wolfssl 2>/dev/null) || return 1
    grep -q '^Package: wolfssl$' <<<"$out"
}
ensure_deb_src() {
    if has_wolfssl_source; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: build wolfSSL $WOLFSSL_VERSION with DTLS 1.3 by hand"
    [[ -r /etc/os-release ]] || die "/etc/os-release is missing: cannot tell the Debian release"
    local id codename
    # shellcheck source=/dev/null
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ $id == debian && -n $codename ]] || die "not Debian (ID=$id VERSION_CODENAME=$codename): add a deb-src entry by hand"
    local text
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        # deb822 (Debian 12+): every stanza of the distribution's list, as deb-src
        text=$(sed -e 's/^Types:.*$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources)
    else
        text=$(printf '%s\n' \
            "Types: deb-src" "URIs: http://deb.debian.org/debian" \
            "Suites: $codename $codename-updates" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
            "Types: deb-src" "URIs: http://deb.debian.org/debian-security" \
            "Suites: $codename-security" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg")
    fi
    log "adding deb-src entries for Debian $codename in $DEB_SRC_LIST"
    printf '# Added by longtls scripts/build-wolfssl.sh: source packages for\n# `apt-get source wolfssl` (Debian %s).\n%s\n' "$codename" "$text" \
        | "${SUDO[@]}" tee "$DEB_SRC_LIST" >/dev/null
    apt_update
    has_wolfssl_source || die "apt still finds no source package 'wolfssl' after adding $DEB_SRC_LIST"
}

# command -> Debian package: the toolchain of ./autogen.sh, ./configure, make,
# and dpkg-source, which `apt-get source` unpacks (and patches) with.
declare -A BUILD_PKG_FOR=(
    [autoconf]=autoconf
    [automake]=automake
    [libtoolize]=libtool
    [gcc]=build-essential
    [make]=build-essential
    [dpkg-source]=dpkg-dev
)
ensure_build_tools() {
    local missing
    mapfile -t missing < <(
        for c in "${!BUILD_PKG_FOR[@]}"; do
            command -v "$c" >/dev/null 2>&1 || echo "${BUILD_PKG_FOR[$c]}"
        done | sort -u
    )
    if ((${#missing[@]} > 0)); then
        log "installing Debian packages: ${missing[*]}"
        ((APT_UPDATED == 1)) || apt_update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${missing[@]}" </dev/null
    fi
    for c in "${!BUILD_PKG_FOR[@]}"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' is still missing (Debian package ${BUILD_PKG_FOR[$c]})"
    done
}

mkdir -p "$PEERS_DIR"
# Several `make peers` may run at once (parallel checkouts share the cache):
# one builds, the others wait and then find the build done.
exec 9>"$PEERS_DIR/.wolfssl.lock"
command -v flock >/dev/null 2>&1 && flock 9
if is_built; then
    log "ok: cached $(head -n1 "$STAMP") in $BUILD_DIR (built meanwhile)"
    exit 0
fi

# what failed builds left for reading (under the lock, so none is running)
rm -rf "$PEERS_DIR"/.wolfssl-build.*

start=$SECONDS
ensure_deb_src
ensure_build_tools

WORK=$(mktemp -d "$PEERS_DIR/.wolfssl-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BUILD_LOG=$WORK/build.log
fail() {
    echo "build-wolfssl: ERROR: $* (last lines of $BUILD_LOG below)" >&2
    tail -n 40 "$BUILD_LOG" >&2 || true
    trap - EXIT  # keep the log to read
    echo "build-wolfssl: the whole log is $BUILD_LOG" >&2
    exit 1
}

log "fetching Debian's source package wolfssl into $WORK"
(cd "$WORK" && apt-get source wolfssl) >>"$BUILD_LOG" 2>&1 || fail "apt-get source wolfssl failed"
dsc=$(cd "$WORK" && ls wolfssl_*.dsc 2>/dev/null | head -n1)
debian_version=${dsc#wolfssl_}
debian_version=${debian_version%.dsc}
[[ -d $WORK/wolfssl-$WOLFSSL_VERSION ]] \
    || fail "Debian's source package is wolfssl $debian_version, not $WOLFSSL_VERSION: change WOLFSSL_VERSION in $0 and check the flags"

src=$WORK/wolfssl-$WOLFSSL_VERSION
log "building wolfSSL $debian_version: ./configure ${CONFIGURE_FLAGS[*]} ${CONFIGURE_ENV[*]}"
(cd "$src" && ./autogen.sh) >>"$BUILD_LOG" 2>&1 || fail "./autogen.sh failed"
(cd "$src" && ./configure "${CONFIGURE_FLAGS[@]}" "${CONFIGURE_ENV[@]}") >>"$BUILD_LOG" 2>&1 \
    || fail "./configure failed"
for define in WOLFSSL_DTLS13 WOLFSSL_DTLS_CID WOLFSSL_SEND_HRR_COOKIE HAVE_CURVE25519 \
    WOLFSSL_DTLS_MTU HAVE_SECRET_CALLBACK; do
    grep -q "^#define $define\$" "$src/wolfssl/options.h" \
        || fail "configure did not turn on $define (wolfssl/options.h)"
done
(cd "$src" && gcc -O2 -Wall -Werror -I. -c "$KEYLOG_SHIM" -o longtls-keylog.o) >>"$BUILD_LOG" 2>&1 \
    || fail "compiling $KEYLOG_SHIM failed"
# The shim goes into every program's link (LIBS); configure's own LIBS stay.
libs=$(sed -n 's/^LIBS = //p' "$src/Makefile")
(cd "$src" && make -j"$(nproc)" LIBS="$libs $src/longtls-keylog.o") >>"$BUILD_LOG" 2>&1 \
    || fail "make failed"
for prog in server client; do
    [[ -x $src/examples/$prog/$prog ]] || fail "make did not build examples/$prog/$prog"
done
# The examples look for ./certs/dh2048.pem from their working directory
# upwards ("wolf root not found" otherwise): run them from the source tree.
(cd "$src" && ./examples/client/client -?) >>"$BUILD_LOG" 2>&1 || fail "examples/client/client -? does not run"

rm -f "$WORK"/wolfssl_* # the downloaded tarballs and .dsc
{
    echo "wolfSSL $debian_version (Debian source package), built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s"
    echo "configure ${CONFIGURE_FLAGS[*]} ${CONFIGURE_ENV[*]}"
    echo "key log shim: scripts/wolfssl-keylog.c (SSLKEYLOGFILE)"
    echo "server: $SRC_DIR/examples/server/server"
    echo "client: $SRC_DIR/examples/client/client"
} >"$WORK/BUILD-INFO"
rm -rf "$BUILD_DIR"
mv "$WORK" "$BUILD_DIR"
trap - EXIT
log "built wolfSSL $debian_version with DTLS 1.3 in $((SECONDS - start)) s: $BUILD_DIR"

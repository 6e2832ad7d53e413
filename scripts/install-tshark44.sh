#!/usr/bin/env bash
# Install Debian 13's tshark 4.4 into a private directory, for the DTLS 1.3
# decryption test of issue 11 (tests/interop/test_tshark_dtls.py):
#   install-tshark44.sh              install, or reuse the cached install; prints its directory
#   install-tshark44.sh --print-dir  print the cache directory and exit (no work;
#                                    tests/helpers/peers.py asks this)
# Debian 12's tshark 4.0 cannot parse the DTLS 1.3 unified header (RFC 9147
# §4), so it never decrypts a DTLS 1.3 record; Wireshark 4.2 and later do.
# Debian 13 (trixie) ships 4.4, but its binaries need trixie's glibc, and the
# machine's system (apt, /usr) must not change. So this script:
#   1. downloads trixie's signed InRelease and checks it with gpgv against
#      the Debian archive keyring this machine already trusts;
#   2. downloads trixie's main/binary-amd64 Packages.xz and checks its SHA256
#      against InRelease;
#   3. resolves tshark's dependency closure from that index (Depends and
#      Pre-Depends, first alternative; maintainer-script-only packages are
#      left out, see SKIP), downloads each .deb from the pool and checks its
#      SHA256 against the index;
#   4. unpacks them with `dpkg-deb -x` (no maintainer scripts, no apt/dpkg
#      state) into ROOT=$DIR/root and writes $DIR/bin/tshark, a wrapper that
#      runs tshark with trixie's own dynamic loader and libraries only:
#        $ROOT/usr/bin/ld-linux-x86-64.so.2 --library-path $ROOT/usr/lib/x86_64-linux-gnu \
#            $ROOT/usr/bin/tshark ...
#      The loader is a copy placed beside tshark because Wireshark finds its
#      data and plugin directories relative to the running executable
#      (/proc/self/exe, which is the loader here): next to tshark they resolve
#      to $ROOT/usr/share/wireshark and $ROOT/usr/lib/x86_64-linux-gnu/wireshark.
#   5. checks that `tshark -v` runs and is Wireshark 4.4, writes INSTALL-INFO.
# The cache is ${LONGTLS_PEERS_DIR:-$HOME/.cache/longtls-peers}/tshark-4.4/;
# a second run does no work at all (no network). Fails loudly (non-zero, a
# clear message) when any step fails. Called by the Makefile's `peers`
# target (`make peers`, `make test`). docs/interop-tshark.md says more.
set -euo pipefail

log() { echo "install-tshark44: $*"; }
die() { echo "install-tshark44: ERROR: $*" >&2; exit 1; }

MIRROR=${LONGTLS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
ARCH=amd64
WIRESHARK_SERIES=4.4
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Dependencies only maintainer scripts use (we run none): debconf questions,
# setcap on dumpcap, adding the wireshark group.
SKIP=(debconf debconf-2.0 libcap2-bin adduser)

# (HOME may be unset in a bare CI environment: take the user's home then)
PEERS_DIR=${LONGTLS_PEERS_DIR:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/longtls-peers}
DIR=$PEERS_DIR/tshark-$WIRESHARK_SERIES
ROOT=$DIR/root
WRAPPER=$DIR/bin/tshark
STAMP=$DIR/INSTALL-INFO

if [[ ${1:-} == --print-dir ]]; then
    echo "$DIR"
    exit 0
elif [[ $# -gt 0 ]]; then
    die "unknown argument '$1' (usage: install-tshark44.sh [--print-dir])"
fi

# (not `tshark -v | grep -q`: grep's early exit can fail the pipe under pipefail)
runs_as_series() { # WRAPPER
    local banner
    banner=$("$1" -v 2>&1) || return 1
    grep -q "^TShark (Wireshark) $WIRESHARK_SERIES\." <<<"$banner"
}
is_installed() {
    [[ -f $STAMP && -x $WRAPPER ]] && runs_as_series "$WRAPPER"
}

if is_installed; then
    log "ok: cached $(head -n1 "$STAMP") in $DIR"
    exit 0
fi

[[ $(uname -m) == x86_64 ]] || die "only x86_64 is supported (this is $(uname -m)): install Wireshark >= 4.2 by hand"
for tool in gpgv xz dpkg-deb sha256sum awk; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (Debian packages gpgv, xz-utils, dpkg, coreutils, mawk)"
done
[[ -r $KEYRING ]] || die "$KEYRING is missing (Debian package debian-archive-keyring): cannot check trixie's signature"

download() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q --tries=3 -O "$2" "$1"
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
    fi
}

mkdir -p "$PEERS_DIR"
# Several `make peers` may run at once (parallel checkouts share the cache):
# one installs, the others wait and then find it done.
exec 9>"$PEERS_DIR/.tshark44.lock"
command -v flock >/dev/null 2>&1 && flock 9
if is_installed; then
    log "ok: cached $(head -n1 "$STAMP") in $DIR (installed meanwhile)"
    exit 0
fi
rm -rf "$PEERS_DIR"/.tshark44-install.*

start=$SECONDS
WORK=$(mktemp -d "$PEERS_DIR/.tshark44-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# 1. The suite's signed release file.
log "checking the signature of $MIRROR/dists/$SUITE/InRelease"
download "$MIRROR/dists/$SUITE/InRelease" "$WORK/InRelease" || die "cannot download $MIRROR/dists/$SUITE/InRelease"
gpgv --keyring "$KEYRING" --output "$WORK/Release" "$WORK/InRelease" >"$WORK/gpgv.log" 2>&1 \
    || die "gpgv rejects $SUITE's InRelease with $KEYRING: $(cat "$WORK/gpgv.log")"

# 2. The package index, checked against the release file (its SHA256 section).
index=main/binary-$ARCH/Packages.xz
want=$(awk -v f="$index" '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && $3 == f { print $1 }' "$WORK/Release")
[[ -n $want ]] || die "$SUITE's Release lists no SHA256 for $index"
download "$MIRROR/dists/$SUITE/$index" "$WORK/Packages.xz" || die "cannot download $MIRROR/dists/$SUITE/$index"
got=$(sha256sum "$WORK/Packages.xz" | cut -d' ' -f1)
[[ $got == "$want" ]] || die "$index: SHA256 $got, but $SUITE's Release says $want"
xz -dc "$WORK/Packages.xz" >"$WORK/Packages" || die "cannot decompress $index"

# 3. tshark's dependency closure: "package version filename sha256" lines.
# Versions are not compared: one suite's index is consistent in itself.
awk -v skip="${SKIP[*]}" '
    function flush() {
        if (pkg != "") { deps[pkg] = pre "," dep; file[pkg] = fn; sha[pkg] = sum; ver[pkg] = v }
        pkg = pre = dep = fn = sum = v = ""
    }
    /^Package: / { flush(); pkg = $2 }
    /^Version: / { v = $2 }
    /^Pre-Depends: / { pre = substr($0, 14) }
    /^Depends: / { dep = substr($0, 10) }
    /^Filename: / { fn = $2 }
    /^SHA256: / { sum = $2 }
    /^Provides: / {
        n = split(substr($0, 11), ps, ",")
        for (i = 1; i <= n; i++) {
            split(ps[i], w, " "); sub(/:.*/, "", w[1])
            if (!(w[1] in provider)) provider[w[1]] = pkg
        }
    }
    END {
        flush()
        n = split(skip, s, " "); for (i = 1; i <= n; i++) skipped[s[i]] = 1
        queue[1] = "tshark"; head = 1; tail = 1
        while (head <= tail) {
            name = queue[head++]
            if (name in skipped || name in seen) continue
            if (!(name in file)) {
                if (!(name in provider)) { print "MISSING " name; continue }
                name = provider[name]
                if (name in seen) continue
            }
            seen[name] = 1
            print name, ver[name], file[name], sha[name]
            n = split(deps[name], ds, ",")
            for (i = 1; i <= n; i++) {
                split(ds[i], alt, "|"); split(alt[1], w, " "); sub(/:.*/, "", w[1])
                if (w[1] != "") queue[++tail] = w[1]
            }
        }
    }
' "$WORK/Packages" >"$WORK/closure" || die "cannot resolve the dependency closure of tshark"
if grep -q '^MISSING ' "$WORK/closure"; then
    die "$SUITE's index lacks dependencies of tshark: $(grep '^MISSING ' "$WORK/closure" | cut -d' ' -f2 | tr '\n' ' ')"
fi
version=$(awk '$1 == "tshark" { print $2 }' "$WORK/closure")
[[ $version == "$WIRESHARK_SERIES".* ]] || die "$SUITE has tshark '${version:-none}', not Wireshark $WIRESHARK_SERIES: check this script"
log "tshark $version from $SUITE: $(wc -l <"$WORK/closure") packages (tshark and its dependencies)"

mkdir -p "$WORK/debs" "$WORK/root"
while read -r name pkg_version filename sha <&3; do
    deb=$WORK/debs/${filename##*/}
    download "$MIRROR/$filename" "$deb" || die "cannot download $MIRROR/$filename"
    got=$(sha256sum "$deb" | cut -d' ' -f1)
    [[ $got == "$sha" ]] || die "$filename: SHA256 $got, but $SUITE's index says $sha"
    # 4. Unpack only: no maintainer scripts, nothing outside the private root.
    dpkg-deb -x "$deb" "$WORK/root" || die "dpkg-deb -x $filename failed"
    echo "$name $pkg_version" >>"$WORK/packages"
done 3<"$WORK/closure"
rm -rf "$WORK/debs"

loader=$WORK/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[[ -f $loader && -x $WORK/root/usr/bin/tshark ]] || die "the unpacked packages have no $loader or usr/bin/tshark"
cp "$loader" "$WORK/root/usr/bin/ld-linux-x86-64.so.2"

mkdir -p "$WORK/bin" "$WORK/config"
# The wrapper finds its root from its own location, so the cache directory can move.
cat >"$WORK/bin/tshark" <<'EOF'
#!/bin/sh
# tshark 4.4 from Debian trixie, run with trixie's loader and libraries
# (written by longtls scripts/install-tshark44.sh). WIRESHARK_CONFIG_DIR: a
# personal configuration of its own, not the system tshark's profile.
here=$(cd "$(dirname "$0")/.." && pwd)
root=$here/root
WIRESHARK_CONFIG_DIR=$here/config
export WIRESHARK_CONFIG_DIR
exec "$root/usr/bin/ld-linux-x86-64.so.2" --library-path "$root/usr/lib/x86_64-linux-gnu" "$root/usr/bin/tshark" "$@"
EOF
chmod +x "$WORK/bin/tshark"

# 5. It runs, and it is the version we unpacked.
banner=$("$WORK/bin/tshark" -v 2>&1) || die "tshark $version does not run with trixie's loader: $banner"
runs_as_series "$WORK/bin/tshark" || die "unexpected 'tshark -v' output: $banner"

{
    echo "tshark $version (Debian $SUITE), installed $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s"
    echo "run: $DIR/bin/tshark (trixie's ld-linux-x86-64.so.2 --library-path root/usr/lib/x86_64-linux-gnu)"
    echo "packages (SHA256-checked against $SUITE's signed index):"
    sed 's/^/  /' "$WORK/packages"
} >"$WORK/INSTALL-INFO"
rm -f "$WORK/InRelease" "$WORK/Release" "$WORK/Packages" "$WORK/Packages.xz" "$WORK/closure" "$WORK/packages" "$WORK/gpgv.log"
rm -rf "$DIR"
mv "$WORK" "$DIR"
trap - EXIT
"$WRAPPER" -v >/dev/null 2>&1 || die "tshark does not run from $DIR after moving it there"
log "installed tshark $version in $((SECONDS - start)) s: $DIR"

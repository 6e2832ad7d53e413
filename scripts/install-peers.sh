#!/usr/bin/env bash
# Install what the test suite needs from Debian:
#   install-peers.sh               the command-line interop peers: openssl
#                                  (s_server/s_client), gnutls-bin
#                                  (gnutls-serv/gnutls-cli/certtool), tshark,
#                                  spin (the SPIN model checker, with gcc for
#                                  its verifiers), haproxy (the PROXY
#                                  protocol v2 peer), systemd-analyze (verifies
#                                  docs/systemd/longtls-tunnel.service), and wolfSSL's DTLS 1.3
#                                  example client and server, built from
#                                  Debian's source package and cached
#                                  (scripts/build-wolfssl.sh)
#   install-peers.sh --python-venv [PYTHON]
#                                  the venv module for PYTHON (Debian ships
#                                  python3 without ensurepip)
# Idempotent: when everything is already there no apt work is done, so local
# runs stay fast. Needs root (or password-less sudo) only when something is
# missing. Python peers (tlslite-ng, pyOpenSSL) come from the `test` extra.
set -euo pipefail

log() { echo "install-peers: $*"; }
die() { echo "install-peers: ERROR: $*" >&2; exit 1; }

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root to apt-get install $*"
        sudo=(sudo -n)
    fi
    # tshark pulls in wireshark-common, which asks whether non-root users may
    # capture; answer "no" up front so an unattended install never blocks.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | "${sudo[@]}" debconf-set-selections
    if ((APT_UPDATED == 0)); then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "$@" </dev/null
}

if [[ ${1:-} == --python-venv ]]; then
    python=${2:-python3}
    probe=$(mktemp -d)
    trap 'rm -rf "$probe"' EXIT
    if "$python" -m venv "$probe/v" >/dev/null 2>&1; then
        exit 0
    fi
    ver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    log "'$python -m venv' does not work; installing python${ver}-venv"
    apt_install "python${ver}-venv" || apt_install python3-venv
    rm -rf "$probe/v"
    "$python" -m venv "$probe/v" >/dev/null || die "'$python -m venv' still fails after installing python${ver}-venv"
    exit 0
fi

# binary -> Debian package that provides it
declare -A PKG_FOR=(
    [openssl]=openssl
    [gnutls-cli]=gnutls-bin
    [gnutls-serv]=gnutls-bin
    [certtool]=gnutls-bin
    [tshark]=tshark
    [spin]=spin
    [gcc]=build-essential
    [haproxy]=haproxy
    [systemd-analyze]=systemd
)
BINARIES=(openssl gnutls-cli gnutls-serv certtool tshark spin gcc haproxy systemd-analyze)

mapfile -t MISSING < <(
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null 2>&1 || echo "${PKG_FOR[$b]}"
    done | sort -u
)

if ((${#MISSING[@]} > 0)); then
    log "installing Debian packages: ${MISSING[*]}"
    apt_install "${MISSING[@]}"
fi

# Verify every binary is there and actually runs.
status=0
for b in "${BINARIES[@]}"; do
    if ! command -v "$b" >/dev/null 2>&1; then
        echo "install-peers: ERROR: '$b' is missing (Debian package ${PKG_FOR[$b]})" >&2
        status=1
    fi
done
if ((status == 0)); then
    openssl version >/dev/null 2>&1 || { echo "install-peers: ERROR: 'openssl version' failed" >&2; status=1; }
    gnutls-cli --version >/dev/null 2>&1 || { echo "install-peers: ERROR: 'gnutls-cli --version' failed" >&2; status=1; }
    tshark --version >/dev/null 2>&1 || { echo "install-peers: ERROR: 'tshark --version' failed" >&2; status=1; }
    spin -V >/dev/null 2>&1 || { echo "install-peers: ERROR: 'spin -V' failed" >&2; status=1; }
    haproxy -v >/dev/null 2>&1 || { echo "install-peers: ERROR: 'haproxy -v' failed" >&2; status=1; }
fi
((status == 0)) || exit 1
log "ok: $(openssl version | head -n1); $(gnutls-cli --version | head -n1); $(tshark --version 2>/dev/null | head -n1); $(spin -V | head -n1); $(haproxy -v | head -n1)"

# wolfSSL with DTLS 1.3: built once, then cached (no work when it is there).
bash "$(dirname "${BASH_SOURCE[0]}")/build-wolfssl.sh" || die "could not build wolfSSL's DTLS 1.3 peer (scripts/build-wolfssl.sh)"

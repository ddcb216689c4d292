#!/usr/bin/env bash
# Install enclave on Debian 12 as root, with the system's own Python, then optionally run it.
#
#   bash install.sh [bench|test] [ARGS...]      (from the checkout's root or from anywhere)
#
#   (no verb)  install only
#   bench      install, then run `enclave bench ARGS...`
#   test       install with the test extra, then run the whole suite: `pytest ARGS...` in the checkout
#
# What it does (every step is idempotent; running it again upgrades in place):
#   1. apt-get installs the compiler, Python headers and venv module (to build the Cython fast
#      path) and the system tools the agent, the bench and the suite run: ip/tc (iproute2),
#      nft (nftables), iperf3, sysctl (procps), dig (bind9-dnsutils), openssl, systemd-analyze;
#      `test` adds postgresql (the suite starts a throwaway PostgreSQL server) and miniupnpd
#      (nftables build) with stun-server (netlab's port-mapping router, Site(upnp=True)).
#   2. makes a virtual environment at $ENCLAVE_PREFIX (default /opt/enclave) with Debian's
#      /usr/bin/python3 (PEP 668: the system Python itself stays untouched).
#   3. installs this checkout into it: a regular (non-editable) install; `test` installs it
#      editable with the test extra instead, because the suite imports the checkout's own
#      `enclave/` (pytest puts the checkout on sys.path), so the fast path is compiled in place.
#   4. links $ENCLAVE_PREFIX/bin/enclave to /usr/local/bin/enclave.
set -euo pipefail

prefix="${ENCLAVE_PREFIX:-/opt/enclave}"
python="${ENCLAVE_PYTHON:-/usr/bin/python3}"
link_dir="/usr/local/bin"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
apt_packages=(
    build-essential python3-dev python3-venv
    iproute2 nftables iperf3 procps bind9-dnsutils openssl systemd ca-certificates
)
test_packages=(
    postgresql  # server binaries for the PostgreSQL-backed store tests
    #             (tests/support/postgres.py starts a throwaway cluster)
    miniupnpd miniupnpd-nftables stun-server  # a lab router granting port mappings
    #             (enclave/netlab/upnp.py runs them inside a router namespace; their own
    #             services stay off: debconf's start_daemon and /etc/default/stun say no)
)

verb="${1:-}"
case "$verb" in
    "") ;;
    bench) shift ;;
    test) shift; apt_packages+=("${test_packages[@]}") ;;
    -h | --help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown verb '$verb' (use: bench, test, or nothing)" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs Debian packages and writes $prefix, $link_dir)" >&2
    exit 1
fi
if [ ! -f "$here/pyproject.toml" ] || [ ! -d "$here/enclave" ]; then
    echo "install.sh: $here is not an enclave checkout" >&2
    exit 1
fi

echo "==> Debian packages: ${apt_packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${apt_packages[@]}"

if ! "$prefix/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ]; then
        echo "install.sh: $prefix exists and is not a virtual environment; not touching it" >&2
        exit 1
    fi
    echo "==> virtual environment $prefix (from $python)"
    rm -rf "$prefix"
    "$python" -m venv "$prefix"
fi

pip=("$prefix/bin/python" -m pip install --disable-pip-version-check --upgrade)
if [ "$verb" = test ]; then
    echo "==> installing $here (editable, with the test extra) into $prefix"
    "${pip[@]}" --editable "$here[test]"
else
    echo "==> installing $here into $prefix"
    "${pip[@]}" "$here"  # a local directory is always rebuilt and reinstalled
fi

mkdir -p "$link_dir"
ln -sfn "$prefix/bin/enclave" "$link_dir/enclave"
echo "==> $("$link_dir/enclave" --version) at $link_dir/enclave"

case "$verb" in
    bench) exec "$link_dir/enclave" bench "$@" ;;
    test) cd "$here" && exec "$prefix/bin/python" -m pytest "$@" ;;
esac

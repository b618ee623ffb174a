# Shared by scripts/demo and scripts/test: a Python >= 3.11 virtualenv in .venv with the gateway installed.
# Usage: source scripts/_setup.sh [extra]   (extra = pip extra to install, e.g. test)

_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    # apt_install PKG... : install Debian packages that are missing (needs root or sudo).
    [ "$#" -gt 0 ] || return 0
    echo "installing Debian packages: $*" >&2
    _sudo apt-get update -qq
    _sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then apt_install python3 python3-venv; fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "Python >= 3.11 is needed ($($PYTHON --version 2>&1) found); Debian 12 / Raspberry Pi OS bookworm have it" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then apt_install python3-venv; fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".${1:+[$1]}"

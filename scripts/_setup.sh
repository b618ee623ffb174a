# Shared by scripts/demo, scripts/test, scripts/check and scripts/package: a Python >= 3.11 virtualenv in .venv
# with the gateway installed (editable).
# Usage: source scripts/_setup.sh [extra]   (extra = pip extra to install, e.g. test)
#
# Once set up, this needs no network: pip runs only when .venv is missing or pyproject.toml (or the extra)
# changed since the last install, which .venv/.setup-stamp records. A site behind a metered link can run the
# demo and the tests again and again without reaching the package index.

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

_setup_extra=${1:-}
_setup_hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
_setup_stamp=.venv/.setup-stamp

_setup_is_current() {
    # The stamp is "<sha256 of pyproject.toml> <extra>"; dev includes test, and every extra includes the base.
    local hash extra
    read -r hash extra <"$_setup_stamp" 2>/dev/null || return 1
    [ "$hash" = "$_setup_hash" ] || return 1
    case "$_setup_extra" in
        "") return 0 ;;
        test) [ "$extra" = test ] || [ "$extra" = dev ] ;;
        *) [ "$extra" = "$_setup_extra" ] ;;
    esac
}

if [ ! -x .venv/bin/python ] || ! _setup_is_current; then
    if [ ! -x .venv/bin/python ]; then
        if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then apt_install python3-venv; fi
        "$PYTHON" -m venv .venv
    fi
    echo "installing the gateway into .venv (first run, or pyproject.toml changed: needs the package index)" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # The build backend talks a lot (e.g. setuptools' "Editable installation" notice for a flat layout):
    # keep its output in a log and show it only when the install fails.
    if ! .venv/bin/python -m pip install -q -e ".${_setup_extra:+[$_setup_extra]}" >.venv/setup.log 2>&1; then
        cat .venv/setup.log >&2
        echo "pip install failed (log: .venv/setup.log)" >&2
        exit 1
    fi
    echo "$_setup_hash ${_setup_extra}" >"$_setup_stamp"
fi
unset -f _setup_is_current
unset _setup_extra _setup_hash _setup_stamp

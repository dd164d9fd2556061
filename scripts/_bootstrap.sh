# shellcheck shell=bash
# Sourced by scripts/test, scripts/demo and .ci/run: make sure Python 3.11+ and uv are there.
# Needs only Python 3.11+ on PATH (as python3, or set PYTHON). Defines PYTHON and puts uv on PATH.

export UV_PYTHON_DOWNLOADS=never # uv must use the machine's CPython, never download one
PYTHON="${PYTHON:-python3}"

bootstrap_say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

ensure_python() {
    command -v "${PYTHON}" > /dev/null || {
        bootstrap_say "ERROR: ${PYTHON} not found: Python 3.11+ is required"
        return 1
    }
    "${PYTHON}" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
        bootstrap_say "ERROR: $("${PYTHON}" -V 2>&1) is too old: Python 3.11+ is required"
        return 1
    }
}

# uv: the one on PATH, else the one an earlier run installed, else install it with pip into a
# directory of its own (`pip install --target` works with a system Python whose site-packages
# are "externally managed" too; Debian's python3 lacks pip: as root, apt-get installs it).
UV_TARGET="${XDG_CACHE_HOME:-${HOME}/.cache}/im-infra/uv"

ensure_pip() {
    "${PYTHON}" -m pip --version > /dev/null 2>&1 && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get > /dev/null; then
        bootstrap_say "${PYTHON} has no pip; installing Debian's python3-pip with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3-pip > /dev/null
        "${PYTHON}" -m pip --version > /dev/null 2>&1 && return 0
    fi
    bootstrap_say "ERROR: uv is not installed and ${PYTHON} has no pip to install it with:" \
        "install uv (see https://docs.astral.sh/uv/) or pip (Debian: apt-get install python3-pip)"
    return 1
}

ensure_uv() {
    if ! command -v uv > /dev/null && [[ -x "${UV_TARGET}/bin/uv" ]]; then
        PATH="${UV_TARGET}/bin:${PATH}"
        export PATH
    fi
    if ! command -v uv > /dev/null; then
        bootstrap_say "uv not found; installing it with pip into ${UV_TARGET}"
        ensure_pip || return 1
        rm -rf "${UV_TARGET}.partial"
        "${PYTHON}" -m pip install --quiet --disable-pip-version-check --target "${UV_TARGET}.partial" uv || {
            bootstrap_say "ERROR: could not install uv with '${PYTHON} -m pip install --target ... uv'"
            return 1
        }
        rm -rf "${UV_TARGET}"
        mv "${UV_TARGET}.partial" "${UV_TARGET}"
        PATH="${UV_TARGET}/bin:${PATH}"
        export PATH
    fi
    bootstrap_say "$(uv --version)"
}

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

ensure_uv() {
    if ! command -v uv > /dev/null; then
        bootstrap_say "uv not found; installing it with pip"
        "${PYTHON}" -m pip install --quiet --disable-pip-version-check uv \
            || "${PYTHON}" -m pip install --quiet --disable-pip-version-check --user uv \
            || {
                bootstrap_say "ERROR: could not install uv with '${PYTHON} -m pip install uv'"
                return 1
            }
        # pip may have put the binary in a directory that is not on PATH (e.g. ~/.local/bin).
        local uv_bin
        uv_bin="$("${PYTHON}" -c 'import uv; print(uv.find_uv_bin())')" || {
            bootstrap_say "ERROR: uv was installed but its binary cannot be found"
            return 1
        }
        PATH="$(dirname "${uv_bin}"):${PATH}"
        export PATH
    fi
    bootstrap_say "$(uv --version)"
}

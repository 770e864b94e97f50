#!/usr/bin/env bash
# Installs everything LLM Workbench needs into ./.venv (idempotent; safe to run again).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    + test tools, the Hugging Face peer, Playwright and Debian's chromium
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PYTHON="${PYTHON:-python3}"

if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating the virtual environment in .venv ($PYTHON -m venv)"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# Torch first, pinned to the CPU build these machines install offline; a GPU box can install a
# CUDA build of the same range beforehand and this step leaves it alone.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "==> installing torch 2.13 (a large download: a few minutes the first time, no progress shown)"
    "${PIP[@]}" "torch==2.13.0"
fi

if [[ $DEV == 1 ]]; then
    echo "==> installing the app with its test tools into .venv (pip install -e '.[dev]')"
    "${PIP[@]}" -e ".[dev]"
    # Browser tests drive Debian's chromium through Playwright (no browser download is possible).
    if [[ ! -x /usr/bin/chromium ]]; then
        SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    fi
else
    echo "==> installing the app and its dependencies into .venv (pip install -e .)"
    "${PIP[@]}" -e .
fi
# The WARC reader of `workbench clean` (datatrove, through python-magic) needs the OS's libmagic.
if ! ldconfig -p 2>/dev/null | grep -q "libmagic.so.1"; then
    echo "==> installing Debian's libmagic1 (WARC files in workbench clean)"
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libmagic1 >/dev/null
fi
echo "setup done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"

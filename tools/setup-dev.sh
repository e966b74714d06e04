#!/usr/bin/env bash
# Install what the monitor and its tests need on a fresh Debian 12 machine:
# Debian packages (libvirt-python compiles against libvirt-dev), and a venv
# in .venv with the project installed in editable mode. Idempotent: a second
# run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libvirt-dev pkg-config gcc make python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-dev: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup-dev: creating .venv"
    "$PY" -m venv .venv
fi
# Reinstall only when the requirements or setup.cfg changed.
stamp=.venv/.iim-installed
want=$(cat requirements.txt test-requirements.txt setup.cfg | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup-dev: installing Python requirements into .venv"
    timeout 900 .venv/bin/pip install -q -U pip 2>&1 | grep -v "^WARNING: Location" || true
    timeout 1800 .venv/bin/pip install -q -r requirements.txt -r test-requirements.txt 2>&1 \
        | grep -v "^WARNING: Location" || true
    timeout 900 .venv/bin/pip install -q -e . 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import libvirt, masakarimonitors_iim" \
        || { echo "setup-dev: install failed"; exit 1; }
    echo "$want" > "$stamp"
fi

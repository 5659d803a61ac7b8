#!/usr/bin/env bash
# Debian/Ubuntu packages the test suite needs beyond the Python venv; safe to run repeatedly.
#   chromium: headless browser for tests/test_mlflow_ui.py (driven by Playwright, which is told
#             to use /usr/bin/chromium instead of downloading its own browser build).
# Installs only what is missing; `apt-get update` runs only when something is. Needs root or sudo.
set -euo pipefail

PACKAGES=(chromium)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if (( ${#missing[@]} == 0 )); then
    echo "install_system_deps: already installed: ${PACKAGES[*]}"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: error: apt-get not found; install ${missing[*]} with your package manager" >&2
    exit 1
fi

if (( EUID == 0 )); then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install_system_deps: error: need root or sudo to install ${missing[*]}" >&2
    exit 1
fi

echo "install_system_deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"

#!/usr/bin/env bash
# System packages that `make demo`, `make test` and the test suite need on stock Debian/Ubuntu, beyond
# what `make setup` puts in the venv. Safe to run repeatedly; .ci/run runs it as root.
#   make          the README's two commands
#   python3-venv  `python3 -m venv` with pip (Debian leaves ensurepip out of python3 itself)
#   curl, procps  scripts/local_cluster.sh (health checks, ps) and the cluster tests
#   chromium      headless browser for tests/test_mlflow_ui.py (driven by Playwright, which is told to
#                 use /usr/bin/chromium, or $SSEG_CHROMIUM, instead of downloading its own build)
# Each need is checked by what is there (a command, a module, a file), not by package name, so a Python
# from pyenv or a Chromium elsewhere counts; apt-get (update included) runs only when something is
# missing. Ubuntu ships Chromium only as a snap, which does not run in containers: there a non-snap
# `chromium` deb is installed if apt offers one (e.g. from a PPA), else one line says what to install.
# Exit status: 0 when everything is there afterwards, 1 otherwise.
set -euo pipefail

PYTHON=${PYTHON:-python3}
CHROMIUM=${SSEG_CHROMIUM:-/usr/bin/chromium}
OS_RELEASE=${SSEG_OS_RELEASE:-/etc/os-release}
say() { echo "install_system_deps: $*"; }
die() { echo "install_system_deps: error: $*" >&2; exit 1; }

missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
"$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ps >/dev/null 2>&1 || missing+=(procps)
need_chromium=0
[[ -x "$CHROMIUM" ]] || need_chromium=1

if (( ${#missing[@]} == 0 && need_chromium == 0 )); then
    say "nothing to install (make, python3-venv, curl, procps, chromium present)"
    exit 0
fi

distro=""
if [[ -r "$OS_RELEASE" ]]; then
    distro=$(. "$OS_RELEASE" && echo "${ID:-} ${ID_LIKE:-}")
fi
ubuntu=0
[[ " $distro " == *" ubuntu "* ]] && ubuntu=1
ubuntu_chromium_hint="Ubuntu ships Chromium only as a snap, which does not run here: install a non-snap Chromium (the 'chromium' deb from a PPA such as xtradeb/apps, or Google Chrome) and set SSEG_CHROMIUM to its binary if that is not /usr/bin/chromium"

command -v apt-get >/dev/null 2>&1 || {
    wanted=("${missing[@]}"); (( need_chromium )) && wanted+=(chromium)
    die "apt-get not found; install ${wanted[*]} with your package manager"
}
if (( EUID == 0 )); then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    wanted=("${missing[@]}"); (( need_chromium )) && wanted+=(chromium)
    die "need root or sudo to install ${wanted[*]}"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt() {  # quiet apt-get; its output is shown only when it fails
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 "$@" \
            >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "apt-get $* failed"
    fi
}

apt update
chromium_problem=""
if (( need_chromium )); then
    if (( ubuntu )); then
        # Only a real deb: Ubuntu's own chromium-browser is a transitional package that installs the snap.
        candidate=$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [[ -n "$candidate" && "$candidate" != "(none)" && "$candidate" != *snap* ]]; then
            missing+=(chromium)
        else
            chromium_problem=$ubuntu_chromium_hint
        fi
    else
        missing+=(chromium)
    fi
fi
if (( ${#missing[@]} )); then
    say "installing ${missing[*]}"
    apt install "${missing[@]}"
fi
if (( need_chromium )) && [[ -z "$chromium_problem" && ! -x "$CHROMIUM" ]]; then
    chromium_problem="chromium was installed but $CHROMIUM is not there; set SSEG_CHROMIUM to the browser binary"
fi
[[ -z "$chromium_problem" ]] || die "$chromium_problem"
say "done"

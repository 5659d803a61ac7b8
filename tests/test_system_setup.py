"""Fresh-machine setup: scripts/install_system_deps.sh (run against stub commands, never the real apt),
the Makefile's TORCH_INDEX switch (make's dry run) and .ci/run's CI=true."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install_system_deps.sh"
TOOLS = ["bash", "env", "mktemp", "tail", "awk", "rm"]  # what the script itself calls besides the checks

APT_GET = """#!/bin/bash
echo "apt-get $*" >> "$STUB_LOG"
if [[ " $* " == *" install "* && " $* " == *" chromium "* ]]; then
    printf '#!/bin/sh\\n' > "$SSEG_CHROMIUM"; "$STUB_CHMOD" +x "$SSEG_CHROMIUM"
fi
"""


def _stub(directory: Path, name: str, body: str = "#!/bin/sh\nexit 0\n") -> None:
    path = directory / name
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _run(tmp_path: Path, present: set[str], distro: str = "debian", candidate: str = "(none)"):
    """Run the script with only ``present`` of make/python3/curl/ps/chromium on a stub PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    for name in {"make", "curl", "ps"} & present:
        _stub(bin_dir, name)
    _stub(bin_dir, "python3", "#!/bin/sh\nexit 0\n" if "python3" in present else "#!/bin/sh\nexit 1\n")
    _stub(bin_dir, "apt-get", APT_GET)
    _stub(bin_dir, "apt-cache", f"#!/bin/sh\necho 'chromium:'\necho '  Candidate: {candidate}'\n")
    _stub(bin_dir, "sudo", '#!/bin/sh\nexec "$@"\n')
    chromium = tmp_path / "chromium"
    if "chromium" in present:
        _stub(tmp_path, "chromium")
    os_release = tmp_path / "os-release"
    os_release.write_text(f"ID={distro}\n" + ("ID_LIKE=debian\n" if distro == "ubuntu" else ""))
    log = tmp_path / "apt.log"
    env = {"PATH": str(bin_dir), "STUB_LOG": str(log), "STUB_CHMOD": shutil.which("chmod"),
           "SSEG_CHROMIUM": str(chromium), "SSEG_OS_RELEASE": str(os_release), "HOME": str(tmp_path)}
    proc = subprocess.run([shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


ALL = {"make", "python3", "curl", "ps", "chromium"}


def test_nothing_missing_runs_no_apt(tmp_path):
    proc, calls = _run(tmp_path, ALL)
    assert proc.returncode == 0, proc.stderr
    assert calls == []
    assert proc.stdout.count("\n") == 1 and "nothing to install" in proc.stdout


def test_fresh_debian_installs_everything_once(tmp_path):
    proc, calls = _run(tmp_path, set())
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2 and calls[0].endswith(" update")
    installed = calls[1].split(" install ", 1)[1].split()
    assert installed == ["make", "python3-venv", "curl", "procps", "chromium"]
    assert "-q" in calls[1] and "-y" in calls[1]
    # quiet: one line saying what is installed, one saying it is done; apt's output is not shown
    assert proc.stdout.splitlines() == ["install_system_deps: installing make python3-venv curl procps chromium",
                                        "install_system_deps: done"]


def test_only_what_is_missing(tmp_path):
    proc, calls = _run(tmp_path, ALL - {"curl"})
    assert proc.returncode == 0, proc.stderr
    assert calls[-1].split(" install ", 1)[1].split() == ["curl"]


def test_ubuntu_without_a_non_snap_chromium_names_what_to_install(tmp_path):
    proc, calls = _run(tmp_path, ALL - {"chromium", "ps"}, distro="ubuntu")
    assert proc.returncode == 1
    assert calls[-1].split(" install ", 1)[1].split() == ["procps"]  # the rest is still installed
    message = proc.stderr.strip()
    assert "\n" not in message and "snap" in message and "SSEG_CHROMIUM" in message


def test_ubuntu_with_a_chromium_deb_installs_it(tmp_path):
    proc, calls = _run(tmp_path, ALL - {"chromium"}, distro="ubuntu", candidate="150.0-1xtradeb1")
    assert proc.returncode == 0, proc.stderr
    assert calls[-1].split(" install ", 1)[1].split() == ["chromium"]


def test_ubuntu_snap_transitional_chromium_is_not_installed(tmp_path):
    proc, calls = _run(tmp_path, ALL - {"chromium"}, distro="ubuntu", candidate="2:1snap1-0ubuntu2")
    assert proc.returncode == 1 and not any(" install " in c for c in calls)


def _make_dry_run(tmp_path: Path, *args: str) -> list[str]:
    """The commands `make setup` would run in a fresh venv (make -n -B prints, runs nothing)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = subprocess.run([make, "-n", "-B", "-C", str(ROOT), "setup", f"VENV={tmp_path / 'venv'}", *args],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line for line in out.splitlines() if re.search(r"pip install .*torch==", line)]


def test_makefile_torch_index_selects_the_index(tmp_path):
    default = _make_dry_run(tmp_path)
    assert len(default) == 1 and "index-url" not in default[0]
    cpu = _make_dry_run(tmp_path, "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert len(cpu) == 1 and "--index-url https://download.pytorch.org/whl/cpu" in cpu[0]
    assert "torch==2.13.0 torchvision==0.28.0" in cpu[0]


def test_ci_run_exports_ci_true():
    text = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "export CI=true" in lines
    assert lines.index("export CI=true") < next(i for i, line in enumerate(lines) if line.startswith("make "))

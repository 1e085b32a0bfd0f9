"""scripts/install.sh --prefix: installs into a directory, twice, without touching the system.

The two installs (each a real ``pip install`` of this repository; pip's cache and
``PIP_*`` settings are passed through) run once per module and the tests share them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install.sh"
INSTALL_TIMEOUT = 900  # a cold pip cache may build wheels
TOKEN = "kiosk-install-test-token-7c7c7c7c"
KEPT_MARKER = "# edited by the operator: must survive an upgrade\n"


@dataclass(frozen=True)
class Installed:
    prefix: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    #: what a reader that opened the (carelessly 0644) token file before the second run could read after it
    held_read: bytes


def run_install(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "KIOSKD_TOKEN"}
    environment.update(PYTHON=sys.executable, **env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment, timeout=INSTALL_TIMEOUT
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """First install without a token; the operator edits config.toml; second install with $KIOSKD_TOKEN."""
    prefix = tmp_path_factory.mktemp("prefix")
    first = run_install("--prefix", str(prefix))
    assert first.returncode == 0, first.stdout + first.stderr
    config = prefix / "etc/kioskd/config.toml"
    config.write_text(config.read_text() + KEPT_MARKER)
    token = prefix / "etc/kioskd/token"
    token.chmod(0o644)  # a careless edit; a local user opens it while it is readable
    with open(token, "rb") as held:
        second = run_install("--prefix", str(prefix), KIOSKD_TOKEN=TOKEN)
        held_read = held.read()
    assert second.returncode == 0, second.stdout + second.stderr
    return Installed(prefix, first, second, held_read)


def test_first_run_installs_config_and_empty_token(installed: Installed) -> None:
    assert "installed" in installed.first.stdout and "config.toml" in installed.first.stdout
    assert "created empty" in installed.first.stdout


def test_config_is_not_overwritten(installed: Installed) -> None:
    text = (installed.prefix / "etc/kioskd/config.toml").read_text()
    assert text.endswith(KEPT_MARKER)
    assert text.removesuffix(KEPT_MARKER) == (ROOT / "config.toml").read_text()
    assert "kept existing" in installed.second.stdout


def test_token_from_env_mode_0600_never_printed(installed: Installed) -> None:
    token = installed.prefix / "etc/kioskd/token"
    assert token.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    for run in (installed.first, installed.second):
        assert TOKEN not in run.stdout + run.stderr


def test_token_is_never_written_into_a_file_others_could_open(installed: Installed) -> None:
    """The token goes into a new 0600 file that replaces the old one, never into the old file."""
    assert installed.held_read == b""
    token = installed.prefix / "etc/kioskd/token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == TOKEN + "\n"


def test_unit_file_installed(installed: Installed) -> None:
    unit = installed.prefix / "etc/systemd/system/kioskd.service"
    assert unit.read_text() == (ROOT / "systemd/kioskd.service").read_text()


def test_kioskd_is_on_path_and_the_backend_units_are_installed(installed: Installed) -> None:
    link = installed.prefix / "usr/local/bin/kioskd"
    assert link.is_symlink() and os.readlink(link) == str(installed.prefix / "opt/kioskd/venv/bin/kioskd")
    result = subprocess.run([str(link), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("kioskd "), result.stderr
    for unit in ("kioskd-backend.service", "kioskd-backend@.service"):
        assert (installed.prefix / "etc/systemd/system" / unit).read_text() == (ROOT / "systemd" / unit).read_text()
    assert "sudo usermod -aG kioskd USER lets USER run `kioskd ctl`" in installed.second.stdout


def test_system_steps_are_skipped_and_said(installed: Installed) -> None:
    for run in (installed.first, installed.second):
        for step in ("apt packages", "useradd", "systemctl"):
            assert f"skipped: {step}" in run.stdout, step


def test_venv_kioskd_runs(installed: Installed) -> None:
    exe = installed.prefix / "opt/kioskd/venv/bin/kioskd"
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("kioskd "), result.stderr


def test_help_and_bad_option() -> None:
    help_ = run_install("--help")
    assert help_.returncode == 0 and "--prefix DIR" in help_.stdout
    bad = run_install("--frobnicate")
    assert bad.returncode == 2 and "unknown option" in bad.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as root: a system install would be allowed")
def test_system_install_needs_root() -> None:
    result = run_install("--no-apt")
    assert result.returncode == 1 and "run as root" in result.stderr

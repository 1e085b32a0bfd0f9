"""Which machines kioskd installs on: 32-bit ARM is refused at once, and GPIO says what it has.

The scripts run for real with a PATH shim that fakes ``uname`` and ``dpkg`` (the way a
32-bit Raspberry Pi OS answers them), and with a real virtual environment whose "system"
interpreter is made to have (or lack) lgpio.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from kioskd.hardware.gpio import GpioUnavailable, open_device

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = ROOT / "scripts" / "platform.sh"
TIMEOUT = 60


def shim(tmp_path: Path, machine: str, arch: str | None) -> dict[str, str]:
    """An environment whose ``uname -m`` and ``dpkg --print-architecture`` answer as given;
    ``apt-get`` and ``sudo`` record that they were called (they must not be)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "uname").write_text(f'#!/bin/sh\n[ "$1" = -m ] && echo {machine} || echo Linux\n')
    dpkg = f"echo {arch}" if arch else "exit 127"
    (bin_ / "dpkg").write_text(f'#!/bin/sh\n[ "$1" = --print-architecture ] && {{ {dpkg}; exit; }}\nexit 1\n')
    for name in ("apt-get", "sudo", "useradd"):
        (bin_ / name).write_text(f'#!/bin/sh\necho called >> "{tmp_path}/{name}.called"\nexit 99\n')
    for tool in bin_.iterdir():
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("script", "args"),
    [("scripts/setup", []), ("scripts/install.sh", ["--no-apt"]), ("scripts/install.sh", ["--prefix", "PREFIX"])],
)
@pytest.mark.parametrize(
    ("machine", "arch"),
    [("armv7l", "armhf"), ("aarch64", "armhf"), ("armv6l", None)],  # Pi OS 32-bit, on a 64-bit kernel, no dpkg
)
def test_32bit_arm_is_refused_at_once_with_the_reason(
    tmp_path: Path, script: str, args: list[str], machine: str, arch: str | None
) -> None:
    args = [str(tmp_path / "prefix") if a == "PREFIX" else a for a in args]
    result = subprocess.run(
        ["bash", str(ROOT / script), *args], capture_output=True, text=True, env=shim(tmp_path, machine, arch),
        timeout=TIMEOUT, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    name = Path(script).name
    assert f"{name}: 32-bit ARM ({machine}, {arch or 'no dpkg'}) is not supported" in result.stderr
    assert "64-bit (arm64)" in result.stderr and "msgspec" in result.stderr and "Nothing was changed." in result.stderr
    assert result.stdout == ""
    assert not list(tmp_path.glob("*.called"))
    assert not (tmp_path / "prefix").exists()


def test_64bit_arm_passes_the_check(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", f". {PLATFORM} && kioskd_refuse_32bit setup && echo fine"],
        capture_output=True, text=True, env=shim(tmp_path, "aarch64", "arm64"), timeout=TIMEOUT,
    )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, "fine\n", "")


def make_venv(tmp_path: Path, system_has_lgpio: bool) -> Path:
    """A venv whose base interpreter is a wrapper that can (or cannot) import a real-looking lgpio."""
    system = tmp_path / "system"
    (system / "lib").mkdir(parents=True)
    (system / "lib" / "lgpio.py").write_text("def gpiochip_open(chip):\n    return 0\n")
    python = system / "python3"
    path = f"{system / 'lib'}" if system_has_lgpio else ""
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{path}" exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    cfg = env_dir / "pyvenv.cfg"
    cfg.write_text("".join(
        f"executable = {python}\n" if line.startswith("executable") else line
        for line in cfg.read_text().splitlines(keepends=True)
    ))  # fmt: skip
    return env_dir


def venv_gpio(env_dir: Path, model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'. {PLATFORM} && kioskd_venv_gpio "{env_dir}" setup'],
        capture_output=True, text=True, env={**os.environ, "KIOSKD_DT_MODEL": str(model)}, timeout=TIMEOUT,
    )  # fmt: skip


def test_a_pi_venv_gets_the_systems_lgpio(tmp_path: Path) -> None:
    env_dir = make_venv(tmp_path, system_has_lgpio=True)
    assert "include-system-site-packages = false" in (env_dir / "pyvenv.cfg").read_text()
    model = tmp_path / "model"
    model.write_text("Raspberry Pi 4 Model B Rev 1.5\0")
    result = venv_gpio(env_dir, model)
    assert "include-system-site-packages = true" in (env_dir / "pyvenv.cfg").read_text()
    # The fake lgpio is on the wrapper's PYTHONPATH, not in the real system site-packages,
    # so what this checks is the switch; kioskd_venv_gpio's report is checked below.
    assert result.returncode == 0, result.stderr


def test_a_pi_without_lgpio_is_told_in_words(tmp_path: Path) -> None:
    env_dir = make_venv(tmp_path, system_has_lgpio=False)
    model = tmp_path / "model"
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\0")
    result = venv_gpio(env_dir, model)
    assert result.returncode == 0
    assert "include-system-site-packages = false" in (env_dir / "pyvenv.cfg").read_text()
    assert "setup: warning: no working lgpio" in result.stderr
    assert "no working GPIO pin factory" in result.stderr and "sudo apt install python3-lgpio" in result.stderr


def test_not_a_pi_says_the_tests_use_mock_pins(tmp_path: Path) -> None:
    env_dir = make_venv(tmp_path, system_has_lgpio=False)
    result = venv_gpio(env_dir, tmp_path / "no-such-model")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "setup: GPIO: none here (not a Raspberry Pi); the tests use gpiozero's mock pins\n"


@pytest.mark.skipif(
    "Raspberry Pi" in (Path("/proc/device-tree/model").read_text() if Path("/proc/device-tree/model").exists() else ""),
    reason="a real Raspberry Pi has a working pin factory",
)
def test_no_pin_factory_names_each_one_tried_and_the_fix() -> None:
    """gpiozero's real default factory search, on a machine without GPIO (CI, arm64 under qemu)."""
    with pytest.raises(GpioUnavailable) as info:
        open_device("DigitalInputDevice", 17)
    message = str(info.value)
    assert message.startswith("no working GPIO pin factory: lgpio: "), message
    assert all(f"{factory}: " in message for factory in ("lgpio", "rpigpio", "pigpio", "native")), message
    assert "install python3-lgpio" in message and "system site-packages" in message


def test_setup_refuses_an_unknown_argument_before_installing_anything(tmp_path: Path) -> None:
    env = shim(tmp_path, "x86_64", "amd64")
    result = subprocess.run([ROOT / "scripts/setup", "--browser-less"], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert (result.returncode, result.stderr) == (2, "usage: scripts/setup [--no-browser] [--bench]\n")
    assert not (tmp_path / "apt-get.called").exists()


def test_the_setup_without_browser_installs_the_same_packages_less_chromium() -> None:
    packages = subprocess.run(["bash", "-c", f". {PLATFORM} && kioskd_apt_packages"], capture_output=True,
                              text=True, timeout=TIMEOUT, check=True).stdout.split()
    assert "python3-dev" in packages and "redis-server" in packages
    assert not {"chromium", "chromium-driver"} & set(packages)


def test_the_arm64_check_names_an_unknown_argument(tmp_path: Path) -> None:
    result = subprocess.run([ROOT / "scripts/check-arm64", "--fast"], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert (result.returncode, result.stderr) == (1, "check-arm64: unknown argument: --fast (see --help)\n")

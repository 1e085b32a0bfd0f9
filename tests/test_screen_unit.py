"""systemd/kioskd-screen.service: verify clean, exposure ≤ 2.0, and it opens the page kioskd serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kioskd.config import DEFAULT_SCREEN_LISTEN, parse_config

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "kioskd-screen.service"
EXECUTABLES = ("/usr/bin/cage",)
MAX_EXPOSURE = 2.0
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60)


@needs_analyze
def test_exposure_at_most_two() -> None:
    result = _analyze("security", "--offline=true", "--no-pager", str(UNIT))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@needs_analyze
def test_verify_clean_with_stand_ins(tmp_path: Path) -> None:
    """cage is on the Pi, not on the test machine: stand-ins take its place, nothing else may fail."""
    text = UNIT.read_text()
    for exe in EXECUTABLES:
        stand_in = tmp_path / Path(exe).name
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
        text = text.replace(exe, str(stand_in))
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = _analyze("verify", "--man=no", str(copy))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_unit_opens_the_default_page_in_kiosk_mode() -> None:
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    assert f"--app=http://{DEFAULT_SCREEN_LISTEN}/" in exec_start
    assert "--kiosk" in exec_start and "cage" in exec_start
    assert "--no-sandbox" not in exec_start  # Chromium keeps its own sandbox
    # the default is a valid [screen] listen
    assert parse_config({"screen": {"listen": DEFAULT_SCREEN_LISTEN}}).screen.listen == DEFAULT_SCREEN_LISTEN


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("0.0.0.0:8088", "must be a loopback address"),
        ("192.0.2.1:80", "must be a loopback address"),
        ("8088", "must be HOST:PORT"),
    ],
)
def test_screen_listen_is_loopback_only(listen: str, problem: str) -> None:
    from kioskd.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config({"screen": {"listen": listen}})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("screen.listen: ") and problem in caught.value.problems[0]

"""The systemd units: `systemd-analyze verify` is clean and the exposure score is at most 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = [ROOT / "systemd" / name for name in ("kioskd.service", "kioskd-backend.service", "kioskd-backend@.service")]
INSTALLED_EXE = "/opt/kioskd/venv/bin/kioskd"
MAX_EXPOSURE = 2.0
ANALYZE_TIMEOUT = 60

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=ANALYZE_TIMEOUT)


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_security_exposure(unit: Path) -> None:
    result = _analyze("security", "--offline=true", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_verify_clean(unit: Path, tmp_path: Path) -> None:
    """Verify a copy whose ExecStart points at an existing stand-in for the installed venv's kioskd.

    The untouched file must fail only for that missing binary, nothing else.
    """
    original = _analyze("verify", "--man=no", str(unit))
    problems = [line for line in (original.stdout + original.stderr).splitlines() if line.strip()]
    assert all(INSTALLED_EXE in line for line in problems), problems

    stand_in = tmp_path / "kioskd"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_EXE, str(stand_in)))
    result = _analyze("verify", "--man=no", str(copy))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.parametrize(
    ("unit", "lines"),
    [
        (
            "kioskd.service",
            [
                "Type=notify",
                "NotifyAccess=main",
                "WatchdogSec=30",
                "ExecReload=/bin/kill -HUP $MAINPID",
                f"ExecStart={INSTALLED_EXE} run --config /etc/kioskd/config.toml",
                "User=kioskd",
                "RuntimeDirectory=kioskd",
                "Restart=always",
                "UMask=0077",
                "DeviceAllow=char-alsa rw",
                "LimitNOFILE=1024",  # the limit tests/test_control.py holds 1,100 connections under
            ],
        ),
        (
            "kioskd-backend.service",
            ["EnvironmentFile=/etc/kioskd/backend.env", "Restart=always", "PrivateDevices=yes", "LimitNOFILE=4096"],
        ),
        (
            "kioskd-backend@.service",
            [
                f"ExecStart={INSTALLED_EXE} backend --config /etc/kioskd/backend.toml --listen 127.0.0.1:%i",
                "EnvironmentFile=/etc/kioskd/backend.env",
                "Restart=always",
                "PrivateDevices=yes",
                "LimitNOFILE=4096",
            ],
        ),
    ],
)
def test_unit_contract(unit: str, lines: list[str]) -> None:
    text = (ROOT / "systemd" / unit).read_text().splitlines()
    for line in lines:
        assert line in text, line


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
MDWE_PROBE = textwrap.dedent(
    f"""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
        sys.exit(77)
    import numpy, samplerate, soxr, webrtcvad, msgspec, trio, httpx, pyaudio
    x = numpy.sin(numpy.arange(48000, dtype=numpy.float32))
    assert len(soxr.resample(x, 48000, 16000)) == 16000
    assert abs(len(samplerate.resample(x, 1 / 3, "sinc_medium")) - 16000) <= 1
    numpy.dot(numpy.ones((64, 64)), numpy.ones((64, 64)))
    assert webrtcvad.Vad(2).is_speech(bytes(320), 16000) is False
    assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda v: v + 1)(41) == 42
    pyaudio.PyAudio().terminate()
    print("mdwe-ok")
    """
)


def test_libraries_run_without_wx_memory() -> None:
    """Why ``MemoryDenyWriteExecute=yes`` is safe: the audio stack runs under the kernel's MDWE."""
    result = subprocess.run([sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=120)
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0 and "mdwe-ok" in result.stdout, result.stderr[-2000:]


def test_mdwe_probe_can_fail() -> None:
    """The probe really forbids W+X: mapping writable+executable memory is refused under MDWE."""
    probe = textwrap.dedent(
        f"""
        import ctypes, mmap, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
            sys.exit(77)
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        except OSError:
            sys.exit(0)
        sys.exit(1)
        """
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr



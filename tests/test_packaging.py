"""Packaging: a clean build of this repository (what ``pip install .`` runs) warns of nothing.

setuptools announced that ``project.license`` as a TOML table stops working after
2027-02-18; each deprecation it (or pip) prints is a date after which a fresh install on a
Pi may break. The build runs the way a user's ``pip install .`` does — an isolated build
environment with the newest setuptools the floor allows (pip's cache is reused) — and
every line that mentions a deprecation fails the test, so the next one is noticed too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 300  # a cold pip cache downloads setuptools
WARNING = re.compile(r"deprecat|BuildBackendWarning|SetuptoolsWarning", re.IGNORECASE)


def test_pyproject_uses_an_spdx_license_and_a_setuptools_that_reads_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["license"] == "MIT"
    assert all((ROOT / name).is_file() for name in project["license-files"]), project["license-files"]
    # PEP 639 license expressions need setuptools 77; an older one would reject the string.
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


def test_clean_wheel_build_prints_no_deprecation_and_carries_the_license(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    warnings = [line for line in output.splitlines() if WARNING.search(line)]
    assert not warnings, "\n".join(warnings)
    (wheel,) = tmp_path.glob("kioskd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names

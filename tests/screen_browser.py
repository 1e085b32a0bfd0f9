"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium.

Used by the screen tests. Selenium is blocking, so the Trio tests call it through
``trio.to_thread.run_sync``. Screenshots go to ``$KIOSKD_ARTIFACTS`` (default
``build/test-artifacts``) under ``screen/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Flags for Chromium on a machine without a display or a network (no background calls home).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,768",
)


def artifacts_dir() -> Path:
    """Where screenshots of the page are kept after the tests."""
    path = Path(os.environ.get("KIOSKD_ARTIFACTS", "build/test-artifacts")) / "screen"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium for a test module (fresh profile); fails with the reason when none is installed."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("the screen tests need Debian's chromium and chromium-driver (scripts/setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="kioskd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

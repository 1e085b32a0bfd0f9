"""The fleet page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by selenium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from test_backend_server import (
    TOKEN_A,
    TOKEN_B,
    FakeElevenLabs,
    backend_config,
    bearer,
    serving_app,
    serving_backend,
    sha,
)

OPERATOR = "operator-token-browser-OOOOOOOOOOOOOOOO"
IO_TIMEOUT = 90  # Chromium's first start on a busy 2-core machine
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = (390, 844)

webdriver = pytest.importorskip("selenium.webdriver")
if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip("chromium and chromium-driver are not installed (scripts/setup installs them)", allow_module_level=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={PHONE[0]},{PHONE[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(IO_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(driver: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/fleet")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # the form posts and a new page loads: wait for it, or the facts may be read off the old one
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(field))


def _page_facts(driver: Any) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    return {
        "title": driver.title,
        "kiosks": [li.get_attribute("data-kiosk") for li in driver.find_elements(By.CSS_SELECTOR, "#kiosks > li")],
        "problem_text": [li.text for li in driver.find_elements(By.CSS_SELECTOR, ".problems li")],
        "alert": [p.text for p in driver.find_elements(By.CSS_SELECTOR, "[role=alert]")],
        "overflow": driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth"),
        "refresh": driver.execute_script(
            "const m = document.querySelector('meta[http-equiv=refresh]'); return m ? m.content : null"
        ),
        "cookies": {c["name"]: c for c in driver.get_cookies()},
    }


async def test_operator_signs_in_and_sees_problems_first_on_a_phone(browser: Any) -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base:
            config = backend_config(api_base, operator_token_sha256=sha(OPERATOR))
            async with serving_backend(config) as client:
                await client.post("/heartbeat", json={"state": "idle", "version": "0.1.0"}, headers=bearer(TOKEN_A))
                await client.post(
                    "/heartbeat",
                    json={"state": "offline", "problems": ["speaker: no device", "<script>alert(1)</script>"]},
                    headers=bearer(TOKEN_B),
                )
                base = str(client.base_url).rstrip("/")
                await trio.to_thread.run_sync(_sign_in, browser, base, "wrong-token")
                refused = await trio.to_thread.run_sync(_page_facts, browser)
                await trio.to_thread.run_sync(_sign_in, browser, base, OPERATOR)
                signed_in = await trio.to_thread.run_sync(_page_facts, browser)
    assert refused["alert"] == ["That is not the operator's token."] and refused["kiosks"] == []
    assert "kioskd_operator" not in refused["cookies"]
    assert signed_in["title"] == "kioskd fleet"
    assert signed_in["kiosks"] == ["cafe", "lobby"]  # the kiosk with problems first
    assert signed_in["problem_text"] == ["speaker: no device", "<script>alert(1)</script>"]  # shown as text, not run
    assert signed_in["overflow"] <= 0  # no sideways scrolling at 390 px
    assert signed_in["refresh"] == "15"
    cookie = signed_in["cookies"]["kioskd_operator"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

"""The screen page in a real headless Chromium, fed by a real ScreenServer on 127.0.0.1.

The model is driven directly here (the daemon end to end is in test_screen_e2e.py): what
the page shows for each state, tentative then final words, the agent's words revealed in
step with the alignment, reload mid-conversation, clearing at the end, the buttons and the
text box reaching the actions, keyboard use, the larger-text toggle, reduced motion, the
configured language, and the server's refusals (foreign Host or Origin, bad bodies).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from kioskd.screen import ScreenActions, ScreenModel, ScreenServer
from kioskd.screen.server import MAX_STREAMS
from screen_browser import artifacts_dir, browser  # noqa: F401  (fixture)
from test_screen_model import status

WAIT = 10.0


class Recorder:
    """Actions that record what the page asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse: str | None = None

    def actions(self) -> ScreenActions:
        async def talk() -> str | None:
            self.calls.append(("talk", None))
            return self.refuse

        async def end() -> str | None:
            self.calls.append(("end", None))
            return self.refuse

        async def say(text: str) -> str | None:
            self.calls.append(("say", text))
            return self.refuse

        async def feedback(rating: str) -> str | None:
            self.calls.append(("feedback", rating))
            return self.refuse

        return ScreenActions(talk=talk, end=end, say=say, feedback=feedback)


def set_status(server: ScreenServer, **fields: Any) -> None:
    """A kiosk status on the model (defaults: listening in conv_1), and wake the pages."""
    if status(server.model, now=server.clock(), **fields):
        server.changed()


async def in_browser(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


def wait_for(driver: Any, script: str, expected: Any = True, timeout: float = WAIT) -> Any:
    """Wait (bounded by ``timeout`` s) until ``script`` (JS returning a value) returns ``expected``."""
    from selenium.webdriver.support.ui import WebDriverWait

    last: list[Any] = [None]

    def check(d: Any) -> bool:
        last[0] = d.execute_script(script)
        return bool(last[0] == expected)

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)
    except Exception as exc:
        raise AssertionError(f"{script!r} gave {last[0]!r}, expected {expected!r}") from exc
    return last[0]


def shot(driver: Any, name: str) -> None:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000


async def start_server(nursery: trio.Nursery, model: ScreenModel, recorder: Recorder) -> ScreenServer:
    server = ScreenServer(("127.0.0.1", 0), model, recorder.actions())
    await nursery.start(server.run)
    return server


TEXT = "return document.getElementById('state').textContent"
CAPTIONS = (
    "return [...document.querySelectorAll('#captions li')]"
    ".map(li => li.className + '|' + li.querySelector('.text').textContent)"
)


async def test_a_whole_visit_on_the_page(browser: Any) -> None:  # noqa: F811
    recorder = Recorder()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, ScreenModel(language="en", kiosk_name="lobby"), recorder)
            await in_browser(browser.get, server.url + "/")
            await in_browser(wait_for, browser, TEXT, "Press Talk to start")
            assert await in_browser(browser.execute_script, "return document.documentElement.lang") == "en"
            assert await in_browser(browser.execute_script, "return document.getElementById('privacy').hidden")
            await in_browser(shot, browser, "1-idle")

            # Talk: by touch (click) and by keyboard (focus + Enter)
            await in_browser(browser.execute_script, "document.getElementById('talk').click()")
            await in_browser(wait_for, browser, "return 1")
            from selenium.webdriver.common.by import By
            from selenium.webdriver.common.keys import Keys

            talk = await in_browser(browser.find_element, By.ID, "talk")
            await in_browser(talk.send_keys, Keys.ENTER)
            with trio.fail_after(WAIT):
                while len(recorder.calls) < 2:
                    await trio.sleep(0.02)
            assert recorder.calls == [("talk", None), ("talk", None)]

            set_status(server, state="connecting", light="connecting", mic_live=False, conversation_id=None)
            await in_browser(wait_for, browser, TEXT, "Connecting…")
            set_status(server)
            await in_browser(wait_for, browser, TEXT, "Listening — speak now")
            assert not await in_browser(browser.execute_script, "return document.getElementById('privacy').hidden")
            assert (
                await in_browser(browser.execute_script, "return document.getElementById('talk').textContent") == "End"
            )

            # the visitor's words: tentative (italic), then final
            server.model.on_visitor("where is", final=False)
            server.changed()
            await in_browser(wait_for, browser, CAPTIONS, ["visitor tentative|where is"])
            await in_browser(shot, browser, "2-listening-tentative")
            server.model.on_visitor("Where is the café?", final=True)
            server.changed()
            await in_browser(wait_for, browser, CAPTIONS, ["visitor|Where is the café?"])

            # the agent's words, revealed with the audio (one word every 400 ms)
            reply = "The café is on the second floor"
            chars = list(reply)
            starts: list[float] = []
            word = -1
            for i, ch in enumerate(chars):
                if ch != " " and (i == 0 or chars[i - 1] == " "):
                    word += 1
                starts.append(word * 400.0)
            server.model.on_agent(reply, event_id=5)
            server.model.on_alignment(5, chars, starts, [10.0] * len(chars))
            server.changed()
            await in_browser(wait_for, browser, CAPTIONS, ["visitor|Where is the café?", "agent|…"])
            set_status(server, light="speaking", agent_speaking=True)
            await in_browser(wait_for, browser, TEXT, "The assistant is speaking")
            partial = await in_browser(browser.execute_script, CAPTIONS)
            spoken = partial[1].split("|", 1)[1]
            assert reply.startswith(spoken) and spoken != reply, partial
            await in_browser(shot, browser, "3-agent-speaking")
            await in_browser(wait_for, browser, CAPTIONS, ["visitor|Where is the café?", f"agent|{reply}"])
            # screen readers get each caption once, complete
            announced = await in_browser(
                browser.execute_script, "return document.getElementById('announce').textContent"
            )
            assert announced == f"You: Where is the café?Assistant: {reply}"

            # typing instead of speaking, and feedback
            box = await in_browser(browser.find_element, By.ID, "say-text")
            await in_browser(box.send_keys, "Is there a lift?", Keys.ENTER)
            await in_browser(browser.execute_script, "document.getElementById('like').click()")
            with trio.fail_after(WAIT):
                while len(recorder.calls) < 4:
                    await trio.sleep(0.02)
            assert recorder.calls[2:] == [("say", "Is there a lift?"), ("feedback", "like")]
            await in_browser(wait_for, browser, f"{CAPTIONS}.at(-1)", "visitor|Is there a lift?")
            await in_browser(wait_for, browser, "return document.getElementById('notice').textContent",
                             "Thank you for your feedback.")
            assert await in_browser(browser.execute_script, "return document.getElementById('say-text').value") == ""

            # a reload mid-conversation shows the conversation so far
            await in_browser(browser.refresh)
            await in_browser(wait_for, browser, CAPTIONS,
                             ["visitor|Where is the café?", f"agent|{reply}", "visitor|Is there a lift?"])

            # a refused action is said on the page
            recorder.refuse = "the kiosk is offline"
            await in_browser(browser.execute_script, "document.getElementById('talk').click()")
            await in_browser(wait_for, browser, "return document.getElementById('notice').textContent",
                             "the kiosk is offline")
            assert recorder.calls[-1] == ("end", None)

            # the end: the next visitor sees nothing of this one
            set_status(server, state="idle", light="idle", mic_live=False, conversation_id=None)
            await in_browser(wait_for, browser, CAPTIONS, [])
            await in_browser(wait_for, browser, TEXT, "Press Talk to start")
            assert await in_browser(
                browser.execute_script, "return document.getElementById('announce').textContent"
            ) == ""
            await in_browser(shot, browser, "4-ended")
            nursery.cancel_scope.cancel()


async def test_language_larger_text_and_reduced_motion(browser: Any) -> None:  # noqa: F811
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, ScreenModel(language="de"), Recorder())
            await in_browser(browser.execute_cdp_cmd, "Emulation.setEmulatedMedia",
                             {"features": [{"name": "prefers-reduced-motion", "value": "no-preference"}]})
            await in_browser(browser.get, server.url + "/")
            set_status(server, state="connecting", light="connecting", mic_live=False, conversation_id=None)
            await in_browser(wait_for, browser, TEXT, "Verbinde…")
            assert await in_browser(browser.execute_script, "return document.documentElement.lang") == "de"
            animation = "return getComputedStyle(document.getElementById('light')).animationName"
            assert await in_browser(browser.execute_script, animation) == "pulse"
            await in_browser(browser.execute_cdp_cmd, "Emulation.setEmulatedMedia",
                             {"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]})
            assert await in_browser(browser.execute_script, animation) == "none"

            size = "return parseFloat(getComputedStyle(document.getElementById('state')).fontSize)"
            before = await in_browser(browser.execute_script, size)
            assert before >= 40  # large by default: 2rem of a 24 px root
            await in_browser(browser.execute_script, "document.getElementById('bigger').click()")
            after = await in_browser(browser.execute_script, size)
            assert after > before * 1.2
            assert await in_browser(
                browser.execute_script, "return document.getElementById('bigger').getAttribute('aria-pressed')"
            ) == "true"
            # the choice survives a reload
            await in_browser(browser.refresh)
            await in_browser(wait_for, browser, TEXT, "Verbinde…")
            assert await in_browser(browser.execute_script, size) == after
            await in_browser(browser.execute_script, "localStorage.clear()")
            # every control has an accessible name; the captions region is labelled
            names = await in_browser(
                browser.execute_script,
                """
                return [...document.querySelectorAll('button, input')].map(
                    e => e.getAttribute('aria-label') || e.textContent.trim()
                         || (e.labels[0] || {}).textContent || '')""",
            )
            assert all(name.strip() for name in names), names
            nursery.cancel_scope.cancel()


async def test_server_refuses_foreign_pages_and_bad_bodies() -> None:
    recorder = Recorder()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, ScreenModel(), recorder)
            port = server.url.rsplit(":", 1)[1]
            async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
                page = await client.get("/")
                assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
                assert (await client.get("/", headers={"host": f"evil.example:{port}"})).status_code == 421
                post: dict[str, Any] = {"json": {"text": "hi"}}
                foreign = await client.post("/api/say", headers={"origin": "http://evil.example"}, **post)
                assert foreign.status_code == 403
                form = await client.post("/api/talk", content=b"x=1",
                                         headers={"content-type": "application/x-www-form-urlencoded"})
                assert form.status_code == 415
                assert (await client.post("/api/say", content=b"[1]",
                                          headers={"content-type": "application/json"})).status_code == 400
                assert (await client.post("/api/say", json={"text": "x" * 3000})).status_code == 413
                assert (await client.post("/api/say", json={"text": "   "})).json() == {
                    "ok": False, "error": "text must be a non-empty string"}
                assert (await client.post("/api/feedback", json={"rating": "meh"})).json()["ok"] is False
                assert (await client.post("/api/nope", json={})).status_code == 404
                assert (await client.get("/static/../server.py")).status_code == 404
                assert recorder.calls == []  # nothing refused reached the kiosk
                ok = await client.post("/api/say", json={"text": " hello "})
                assert ok.json() == {"ok": True} and recorder.calls == [("say", "hello")]

                # the event stream: a snapshot at once, and a bounded number of listeners
                async with client.stream("GET", "/events") as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    lines = stream.aiter_lines()
                    first = await lines.__anext__()
                    assert json.loads(first.removeprefix("data: "))["state"] == "idle"
                    set_status(server)
                    async for line in lines:
                        if line.startswith("data: "):
                            assert json.loads(line.removeprefix("data: "))["light"] == "listening"
                            break
                    async with trio.open_nursery() as streams:
                        opened = trio.Semaphore(0)

                        async def listen() -> None:
                            async with client.stream("GET", "/events"):
                                opened.release()
                                await trio.sleep_forever()

                        for _ in range(MAX_STREAMS - 1):
                            streams.start_soon(listen)
                        for _ in range(MAX_STREAMS - 1):
                            await opened.acquire()
                        assert (await client.get("/events")).status_code == 503
                        streams.cancel_scope.cancel()
            nursery.cancel_scope.cancel()


# -- contrast (WCAG 2.2 AA: 4.5:1 for text, 3:1 for large text and UI parts) -------------


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_every_colour_pair_meets_wcag_aa() -> None:
    css = (Path(__file__).parents[1] / "kioskd/screen/static/screen.css").read_text()
    colours = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [("text", "bg"), ("text", "panel"), ("muted", "panel"), ("muted", "bg"), ("visitor", "panel"),
             ("agent", "panel"), ("primary-text", "primary"), ("primary-text", "danger"), ("focus", "bg")]
    pairs += [(name, surface) for name in colours if name.startswith("c-") for surface in ("panel", "bg")]
    low = {f"{a} on {b}": round(contrast(colours[a], colours[b]), 2) for a, b in pairs
           if contrast(colours[a], colours[b]) < 4.5}
    assert not low, low
    assert contrast("#ffffff", "#000000") == pytest.approx(21.0)

"""The screen end to end: the real daemon (Kiosk) with [screen] on, the default simulator
(it behaves like the service: a greeting, tentative transcripts, alignment), and a real
headless Chromium on the page. Talk starts the conversation, captions appear in order,
typed text reaches the agent as user_message, feedback reaches it, End empties the page.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import trio

from kiosk_harness import SPEECH_WAV, kiosk_config, read_wav, running_kiosk
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.state import KioskState
from screen_browser import browser  # noqa: F401  (fixture)
from test_screen_page import CAPTIONS, TEXT, in_browser, shot, wait_for

#: Silence before the visitor speaks: the page is open and the greeting has played by then.
LEAD_IN_S = 6.0
TRANSCRIPT = "Where is the cafe?"
REPLY = "The cafe is on the second floor, next to the lifts."
#: Long enough for the lead-in, the visitor's 4 s of speech, the end of their turn and the reply.
TURN_WAIT = 30.0


def visitor_wav(path: Path) -> Path:
    speech, rate = read_wav(SPEECH_WAV)
    audio = np.concatenate([np.zeros(int(LEAD_IN_S * rate), np.int16), speech])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.tobytes())
    return path


async def test_a_conversation_on_the_screen(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    sim_config = SimulatorConfig(transcripts=(TRANSCRIPT,), replies=(REPLY,), tool_call=None)
    with trio.fail_after(120):
        async with open_simulator(sim_config) as sim:
            config = kiosk_config(
                sim, tmp_path,
                audio={"input": f"wav:{visitor_wav(tmp_path / 'visitor.wav')}"},
                screen={"listen": "127.0.0.1:0"},
            )
            async with running_kiosk(config) as running:
                url = running.kiosk.screen.url
                await in_browser(browser.get, url + "/")
                await in_browser(wait_for, browser, TEXT, "Press Talk to start")
                await in_browser(browser.execute_script, "document.getElementById('talk').click()")
                await running.wait_state(KioskState.CONVERSATION)
                greeting = sim_config.first_message
                # the agent greets first; its words follow the audio, then the visitor speaks
                await in_browser(wait_for, browser, CAPTIONS, [f"agent|{greeting}"])
                await in_browser(shot, browser, "e2e-1-greeting")
                # the visitor speaks LEAD_IN_S after the start; the reply follows their turn
                await in_browser(wait_for, browser, CAPTIONS,
                                 [f"agent|{greeting}", f"visitor|{TRANSCRIPT}", f"agent|{REPLY}"], TURN_WAIT)
                await in_browser(shot, browser, "e2e-2-reply")
                conversation = sim.conversations[-1]

                # typing instead of speaking: user_message, and its answer on the page
                from selenium.webdriver.common.by import By
                from selenium.webdriver.common.keys import Keys

                box = await in_browser(browser.find_element, By.ID, "say-text")
                await in_browser(box.send_keys, "Is there a lift?", Keys.ENTER)
                await sim.wait_for(lambda: conversation.user_messages == ["Is there a lift?"])
                captions = [f"agent|{greeting}", f"visitor|{TRANSCRIPT}", f"agent|{REPLY}",
                            "visitor|Is there a lift?", f"agent|{REPLY}"]
                await in_browser(wait_for, browser, CAPTIONS, captions)

                await in_browser(browser.execute_script, "document.getElementById('like').click()")
                await sim.wait_for(lambda: len(conversation.feedback) == 1)
                assert conversation.feedback[0].score == "like"

                # End: the conversation closes and the next visitor sees an empty page
                await in_browser(browser.execute_script, "document.getElementById('talk').click()")
                await running.wait_state(KioskState.IDLE)
                await in_browser(wait_for, browser, CAPTIONS, [])
                await in_browser(wait_for, browser, TEXT, "Press Talk to start")
                await in_browser(shot, browser, "e2e-3-ended")
                assert conversation.close_code == 1000

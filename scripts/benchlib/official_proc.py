"""Run the official client for a while in its own process (for figure 9's CPU/RSS).

    python -m benchlib.official_proc BASE_URL API_KEY AGENT_ID SECONDS
"""

from __future__ import annotations

import sys
import time

from benchlib import official
from benchlib.common import Mic, script
from benchlib.conversation import PATTERN


def main() -> None:
    base, key, agent, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    start = time.monotonic()
    speaker = official.speaker_for_official(start, seconds + 30)
    mic = Mic(origin=start, signal=script(seconds + 10, PATTERN, seed=8))
    audio = official.make_audio(lambda: mic, speaker)
    client = official.make_conversation(base, key, agent, audio, requires_auth=True)
    client.start_session()
    print("started", flush=True)
    time.sleep(seconds)
    client.end_session()
    client.wait_for_session_end()


if __name__ == "__main__":
    main()

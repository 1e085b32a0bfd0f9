"""SIGHUP's reload: a token rotated in its file is used at once; what needs a restart is said."""

from __future__ import annotations

from pathlib import Path

import trio

from kiosk_harness import SPEECH_WAV, running_kiosk
from kioskd.config import load_config
from kioskd.simulator import SimulatorConfig, open_simulator

TIMEOUT = 20
NEW_TOKEN = "rotated-kiosk-token-Zq9Wv8Zq9Wv8Zq9Wv8"


def write_config(path: Path, backend_url: str, agent_id: str, tmp: Path, *, timeout: float = 5.0) -> None:
    path.write_text(f"""
[agent]
agent_id = "{agent_id}"
[backend]
url = "{backend_url}"
token_file = "{tmp / 'token'}"
timeout = {timeout}
[audio]
input = "wav:{SPEECH_WAV}"
output = "wav:{tmp / 'out.wav'}"
echo = "off"
[trigger]
mode = "manual"
[control]
socket = "{tmp / 'control.sock'}"
""")


async def test_a_rotated_token_is_used_at_once_after_reload(tmp_path: Path) -> None:
    sim_config = SimulatorConfig()
    async with open_simulator(sim_config) as sim:
        (tmp_path / "token").write_text(sim_config.kiosk_token + "\n")
        path = tmp_path / "config.toml"
        write_config(path, sim.backend_url, sim_config.agent_id, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(load_config(path)) as running:
                await sim.wait_for(lambda: any(r.status == 200 for r in sim.backend_requests))
                # the operator rotates the token: the backend accepts only the new one from now on
                sim_config.kiosk_token = NEW_TOKEN
                (tmp_path / "token").write_text(NEW_TOKEN + "\n")
                rotated_at = len(sim.backend_requests)
                assert running.kiosk.reload(str(path))
                urls = [await running.kiosk.urls.take(), await running.kiosk.urls.take()]
                # a changed [backend] section still needs a restart, and the reload says so
                write_config(path, sim.backend_url, sim_config.agent_id, tmp_path, timeout=3.0)
                assert running.kiosk.reload(str(path))
                log = running.log.getvalue()
    after = sim.backend_requests[rotated_at:]
    assert after and all(r.status == 200 for r in after), [r.status for r in after]
    assert all(url.startswith(sim.ws_base) for url in urls)
    assert "kiosk token changed" in log
    assert "[backend] changed; restart kioskd to apply it" in log
    assert NEW_TOKEN not in log and "Zq9Wv8" not in log

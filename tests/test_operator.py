"""The operator's kiosk: honest readiness (check-config --online, problems, ctl start), accurate log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio
from gpiozero.pins.mock import MockFactory, MockPWMPin

from alsa_pcm import AlsaFiles, alsa_devices
from kiosk_harness import kiosk_config, running_kiosk
from kioskd.hardware.leds import LightState, light_state
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.state import KioskState

TIMEOUT = 60
LED_PIN = 18


@pytest.fixture(scope="module")
def alsa(tmp_path_factory: pytest.TempPathFactory) -> AlsaFiles:
    return alsa_devices(tmp_path_factory.getbasetemp() / "alsa")


async def kioskd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``kioskd ARGS`` as a real process; its output is captured."""
    return await trio.run_process(
        [sys.executable, "-m", "kioskd", *args], capture_stdout=True, capture_stderr=True, check=False,
        env={**os.environ, "KIOSKD_TOKEN": "", **(env or {})},
    )


def write_toml(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- check-config --online


async def test_check_config_online_opens_devices_and_fetches_a_signed_url(alsa: AlsaFiles, tmp_path: Path) -> None:
    alsa.write_input("kiosk_mic", np.zeros(16000, np.int16))
    sim_config = SimulatorConfig()
    async with open_simulator(sim_config) as sim:
        token = tmp_path / "token"
        token.write_text(sim_config.kiosk_token)
        sections: dict[str, dict[str, object]] = {
            "agent": {"agent_id": sim_config.agent_id},
            "backend": {"url": sim.backend_url, "token_file": str(token)},
            "audio": {"input": "kiosk_mic", "output": "speaker_that_is_not_there"},
        }
        config = write_toml(tmp_path / "c.toml", sections)
        with trio.fail_after(TIMEOUT):
            good = await kioskd("check-config", "--online", "--config", str(config))
            token.write_text("not-the-token")
            bad = await kioskd("check-config", "--online", "--config", str(config))
    lines = good.stdout.decode().splitlines()
    assert good.returncode == 1, good.stderr  # the speaker is missing
    assert lines[0] == f"ok    config: {config}"
    assert lines[1].startswith("ok    audio.input: 'kiosk_mic' opened: 'kiosk_mic' at ")
    assert lines[2].startswith("FAIL  audio.output: no output device matches 'speaker_that_is_not_there' (available: ")
    assert "kiosk_spk" in lines[2]  # what exists is listed
    assert (
        lines[3] == f"ok    backend: {sim.backend_url}: token accepted, signed URL for '{sim_config.agent_id}' received"
    )
    assert len(lines) == 4
    assert b"Cannot connect to server" not in good.stderr + good.stdout  # PortAudio's JACK probe is silenced
    backend = bad.stdout.decode().splitlines()[3]
    assert backend.startswith(
        f"FAIL  backend: {sim.backend_url}: unauthorized: the backend rejected this kiosk's token"
    )
    assert "check /etc/kioskd/token" in backend
    assert sim_config.kiosk_token not in (good.stdout + good.stderr + bad.stdout + bad.stderr).decode()


async def test_check_config_online_all_good_exits_0(tmp_path: Path) -> None:
    wav = Path(__file__).resolve().parent.parent / "kioskd" / "data" / "visitor.wav"
    config = write_toml(tmp_path / "c.toml", {
        "agent": {"agent_id": "agent_public", "server": "wss://api.eu.residency.elevenlabs.io"},
        "audio": {"input": f"wav:{wav}", "output": f"wav:{tmp_path / 'out.wav'}"},
    })
    with trio.fail_after(TIMEOUT):
        result = await kioskd("check-config", "--online", "--config", str(config))
    assert result.returncode == 0, result.stdout
    assert result.stdout.decode().splitlines()[-1] == (
        "ok    backend: none: public agent 'agent_public' on wss://api.eu.residency.elevenlabs.io")


# --------------------------------------------------------------------------- problems


async def test_a_kiosk_without_microphone_says_so_everywhere(tmp_path: Path) -> None:
    """ctl status lists the problems in plain sentences, the log says them at start, the light shows a fault."""
    factory = MockFactory(pin_class=MockPWMPin)
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path, audio={"input": f"wav:{tmp_path / 'no-such-mic.wav'}"},
                              trigger={"mode": "both"}, leds={"kind": "pwm", "pin": LED_PIN})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config, pin_factory=factory) as k:
                status = await k.ctl("status")
                light = light_state(k.kiosk.board.status)
    factory.close()
    mic = f"the microphone is not working: wav:{tmp_path / 'no-such-mic.wav'}: cannot read: No such file or directory"
    assert status["problems"] == [mic]
    assert status["state"] == "idle"
    assert light is LightState.FAULT
    log = k.log.getvalue()
    assert f'msg="problem: {mic}"' in log


async def test_button_and_light_unavailable_are_problems(tmp_path: Path) -> None:
    class NoGpio:
        def __getattr__(self, name: str) -> object:
            raise OSError("no GPIO chip here (/dev/gpiochip0 missing)")

    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path, trigger={"mode": "button"}, leds={"kind": "pwm", "pin": LED_PIN})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config, pin_factory=NoGpio()) as k:
                status = await k.ctl("status")
    assert status["problems"] == [
        "the button (GPIO 17) is unavailable: no GPIO chip here (/dev/gpiochip0 missing); "
        "only `kioskd ctl start` can start a conversation",
        "the status light is unavailable: no GPIO chip here (/dev/gpiochip0 missing)",
    ]


async def test_wrong_token_is_a_rejection_not_an_outage(tmp_path: Path) -> None:
    sim_config = SimulatorConfig()
    async with open_simulator(sim_config) as sim:
        config = kiosk_config(sim, tmp_path)
        (tmp_path / "token").write_text("wrong-token")
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.ERROR)
                status = await k.ctl("status")
                started = await k.ctl("start")
    assert status["problems"] == [
        "the backend refuses this kiosk: unauthorized: the backend rejected this kiosk's token (HTTP 401)"]
    assert status["reason"].startswith("backend refuses this kiosk: unauthorized")
    assert started == {"ok": False, "error": "start failed: unauthorized: the backend rejected this kiosk's token "
                                             "(HTTP 401)"}
    log = k.log.getvalue()
    assert "backend unavailable" not in log and "unreachable" not in log
    assert "backend refuses this kiosk" in log


# --------------------------------------------------------------------------- ctl start waits


async def test_ctl_start_answers_once_the_conversation_is_open(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                reply = await k.ctl("start")
                state = k.kiosk.board.status
                again = await k.ctl("start")
                await k.ctl("end")
                await k.wait_state(KioskState.IDLE)
    assert reply == {"ok": True, "cmd": "start", "conversation_id": "conv_sim_1"}
    assert state.state is KioskState.CONVERSATION and state.conversation_id == "conv_sim_1"
    assert again == {"ok": True, "cmd": "start", "conversation_id": "conv_sim_1", "already": True}
    assert sim.conversations[0].close_code == 1000


async def test_ctl_start_reports_an_agent_this_kiosk_may_not_use(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path, agent={"agent_id": "agent_not_allowed"}, backend={"prefetch": False})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                reply = await k.ctl("start")
    assert reply == {"ok": False, "error": "start failed: forbidden: the backend does not allow this kiosk to use "
                                           "this agent (HTTP 403)"}


async def test_one_log_line_per_retry(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path, backend={"prefetch": False}, log={"level": "info"})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                sim.backend_faults.set("500", times=2)
                reply = await k.ctl("start")
    assert reply["ok"], reply
    lines = [line for line in k.log.getvalue().splitlines() if "HTTP 500" in line]
    retries = [line for line in lines if 'msg="no conversation URL, retrying in' in line]
    assert len(retries) == 2, lines
    # besides: at most the problem appearing (once), if the watch looked during the retries
    assert [line for line in lines if line not in retries] in (
        [], ['level=warning logger=kioskd.ops.problems msg="problem: the backend gives no conversation URLs: '
             'server: the backend failed (HTTP 500)"'])


async def test_ctl_start_command_line_exit_codes(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path)
        (tmp_path / "token").write_text("wrong-token")
        sock = str(tmp_path / "control.sock")
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.ERROR)
                failed = await kioskd("ctl", "--socket", sock, "start")
                (tmp_path / "token").write_text(sim.config.kiosk_token)
    assert failed.returncode == 1
    assert failed.stderr.decode().strip() == (
        "kioskd ctl start: start failed: unauthorized: the backend rejected this kiosk's token (HTTP 401)")


# --------------------------------------------------------------------------- log lines


async def test_one_accurate_line_per_event(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path, log={"level": "info"})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                await k.ctl("start")
                conv = sim.conversations[0]
                await sim.wait_for(lambda: len(conv.turns) >= 1)
                await k.ctl("end")
                await k.wait_state(KioskState.IDLE)
    lines = k.log.getvalue().splitlines()
    states = [line for line in lines if 'msg="state changed"' in line]
    assert [line.split("state=")[1].split()[0] for line in states] == ["idle", "connecting", "conversation", "idle"]
    assert not any("reason=''" in line for line in lines)
    assert not any("state=conversation reason=" in line for line in lines)
    assert not any("logger=httpx" in line for line in lines)  # no line per HTTP request
    ended = [line for line in lines if 'msg="conversation ended"' in line]
    assert ended == ["level=info logger=kioskd.service.supervisor msg=\"conversation ended\" id=conv_sim_1 "
                     "reason='ended by the visitor or operator'"]


def test_portaudio_jack_probe_is_silent() -> None:
    result = subprocess.run([sys.executable, "-m", "kioskd", "devices"], capture_output=True, text=True, timeout=60)
    assert "Cannot connect to server" not in result.stdout + result.stderr
    assert "jack server" not in result.stdout + result.stderr


# --------------------------------------------------------------------------- commands


def test_hash_token_help_shows_help_and_makes_no_token() -> None:
    result = subprocess.run([sys.executable, "-m", "kioskd", "backend", "hash-token", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: kioskd backend hash-token")
    assert "token_sha256 =" not in result.stdout


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "kioskd", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("kioskd ")


def test_devices_explains_an_empty_list(tmp_path: Path) -> None:
    from kioskd.hardware.checks import why_no_devices

    cards = tmp_path / "cards"
    cards.write_text("--- no soundcards ---\n")
    assert why_no_devices(str(cards), str(tmp_path)).startswith("no sound card found")
    cards.write_text(" 0 [Device         ]: USB-Audio - USB PnP Sound Device\n")
    snd = tmp_path / "snd"
    snd.mkdir()
    node = snd / "pcmC0D0c"
    node.write_text("")
    node.chmod(0)
    if os.geteuid() != 0:  # root may open anything: the permission case only exists for others
        assert "add it to the audio group" in why_no_devices(str(cards), str(snd))
    node.chmod(0o666)
    assert why_no_devices(str(cards), str(snd)).startswith("a sound card exists but ALSA offers no device")


def test_devices_lists_default_and_the_file_pcms(alsa: AlsaFiles) -> None:
    result = subprocess.run([sys.executable, "-m", "kioskd", "devices"], capture_output=True, text=True, timeout=60,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "kiosk_mic" in out and "kiosk_spk" in out
    assert "(none" not in out
    assert 'as audio.input / audio.output, "default", or "wav:/path.wav"' in out


def test_test_speaker_uses_the_config(tmp_path: Path) -> None:
    from kiosk_harness import read_wav

    out = tmp_path / "tone.wav"
    config = write_toml(tmp_path / "c.toml", {
        "agent": {"agent_id": "a"}, "audio": {"output": f"wav:{out}", "output_rate": 16000, "volume": 0.5}})
    result = subprocess.run([sys.executable, "-m", "kioskd", "test-speaker", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"on 'wav:{out}' at 16000 Hz" in result.stdout
    samples, rate = read_wav(out)
    assert rate == 16000 and 0.14 * 32767 < np.abs(samples).max() <= 0.15 * 32767 + 1  # 0.3 peak at volume 0.5

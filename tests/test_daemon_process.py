"""``kioskd run`` as systemd runs it: a real process, a real NOTIFY_SOCKET, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from kiosk_harness import SPEECH_WAV
from kioskd.ops.ctl import request
from kioskd.simulator import SimulatorConfig, open_simulator

TIMEOUT = 40


def write_config(path: Path, sim_backend_url: str, agent_id: str, tmp: Path, *, location: str = "bench") -> None:
    path.write_text(f"""
[kiosk]
id = "proc-kiosk"
location = "{location}"
[agent]
agent_id = "{agent_id}"
[backend]
url = "{sim_backend_url}"
token_file = "{tmp / 'token'}"
[audio]
input = "wav:{SPEECH_WAV}"
output = "wav:{tmp / 'out.wav'}"
echo = "off"
[trigger]
mode = "manual"
[control]
socket = "{tmp / 'control.sock'}"
""")


class Notifications:
    """The datagrams a service manager would get on NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.path = path
        self.lines: list[str] = []

    async def bind(self) -> None:
        await self.sock.bind(str(self.path))

    async def wait_for(self, line: str) -> None:
        while line not in self.lines:
            data = await self.sock.recv(4096)
            self.lines += data.decode().split("\n")


async def test_ready_status_sigterm_and_sighup(tmp_path: Path) -> None:
    sim_config = SimulatorConfig()
    async with open_simulator(sim_config) as sim:
        (tmp_path / "token").write_text(sim_config.kiosk_token)
        config = tmp_path / "config.toml"
        write_config(config, sim.backend_url, sim_config.agent_id, tmp_path)
        notes = Notifications(tmp_path / "notify.sock")
        await notes.bind()
        log_path = tmp_path / "stdout.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(notes.path), "KIOSKD_TOKEN": ""}
        with open(log_path, "wb") as log, trio.fail_after(TIMEOUT):
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "kioskd", "run", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
            try:
                await notes.wait_for("READY=1")
                await notes.wait_for("STATUS=idle")
                sock = str(tmp_path / "control.sock")

                # SIGHUP with a broken file: refused, old settings kept, still serving
                config.write_text(config.read_text().replace('mode = "manual"', 'mode = "sometimes"'))
                proc.send_signal(signal.SIGHUP)
                await notes.wait_for("RELOADING=1")
                while "reload refused" not in log_path.read_text():
                    await trio.sleep(0.05)
                # SIGHUP with a good file: applied
                write_config(config, sim.backend_url, sim_config.agent_id, tmp_path, location="atrium")
                proc.send_signal(signal.SIGHUP)
                while "config reloaded" not in log_path.read_text():
                    await trio.sleep(0.05)

                # a second copy on the same control socket refuses to start and leaves the socket alone
                second = await trio.run_process(
                    [sys.executable, "-m", "kioskd", "run", "--config", str(config)],
                    capture_stdout=True, capture_stderr=True, env=env, check=False,
                )
                assert second.returncode == 1, second.stderr
                assert f"in use by a running kioskd (pid {proc.pid})".encode() in second.stderr
                assert b"Traceback" not in second.stderr
                assert (await trio.to_thread.run_sync(request, sock, "status"))["ok"]

                assert (await trio.to_thread.run_sync(request, sock, "start"))["ok"]
                conv = await sim.wait_for_conversation()
                await notes.wait_for("STATUS=conversation")
                await sim.wait_for(lambda: conv.audio_chunks > 5)

                # SIGTERM: the conversation is closed cleanly and the process exits at once
                start = trio.current_time()
                proc.send_signal(signal.SIGTERM)
                code = await proc.wait()
                took = trio.current_time() - start
                await sim.wait_for(lambda: not conv.open)
                await notes.wait_for("STOPPING=1")
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    output = log_path.read_text()
    assert code == 0, output
    assert conv.close_code == 1000
    assert "trigger.mode: expected one of 'button', 'vad', 'both', 'manual', got 'sometimes'" in output
    # the reloaded location reached the agent
    assert conv.client_data is not None and (conv.client_data.dynamic_variables or {})["kiosk_location"] == "atrium"
    # no secret in the journal
    assert sim_config.kiosk_token not in output
    for token in sim.backend.tokens.issued():
        assert token not in output
    print(f"SIGTERM to exit: {took:.2f} s")


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[agent]\nagent_id = "a"\n[audio]\nchunk_ms = 7\n')
    result = subprocess.run([sys.executable, "-m", "kioskd", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "audio.chunk_ms: must be 10, 20, 30, 40 or 50" in result.stderr

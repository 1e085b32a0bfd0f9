"""Figure 9: cost. ``kioskd run`` as a subprocess (wav: microphone with the visitor speaking
0.8 s every 1.8 s, wav: speaker, manual trigger) against the in-process simulator:

* start-up: spawn → ``READY=1`` on a real ``$NOTIFY_SOCKET`` datagram socket;
* idle CPU (% of one core, psutil user+system time over wall time) before any conversation;
* conversation CPU and peak RSS (sampled every 0.25 s) over a full-duplex conversation
  started with ``kioskd ctl start``; the simulator answers every turn with 3 s of audio.

The official client runs the same conversation in its own process (bench devices
modelled in that process; see official.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from kioskd.ops.control import request
from kioskd.simulator import open_simulator

from .common import REPO, script, write_wav
from .conversation import PATTERN, sim_config
from .ours import tmpdir

PY = sys.executable


def _toml(sim: Any, tmp: Path) -> str:
    (tmp / "token").write_text(sim.config.kiosk_token)
    return f"""
[kiosk]
id = "bench-kiosk"
[agent]
agent_id = "{sim.config.agent_id}"
[backend]
url = "{sim.backend_url}"
token_file = "{tmp / 'token'}"
[audio]
input = "wav:{tmp / 'mic.wav'}"
output = "wav:{tmp / 'out.wav'}"
output_rate = 16000
echo = "off"
[conversation]
idle_timeout = 600.0
[trigger]
mode = "manual"
[control]
socket = "{tmp / 'control.sock'}"
[log]
level = "warning"
"""


async def _measure(proc: Any, seconds: float) -> tuple[float, float]:
    """(% of one core, peak RSS MB) of ``proc`` over ``seconds``."""
    c0 = proc.cpu_times()
    t0 = time.monotonic()
    peak = proc.memory_info().rss
    while time.monotonic() - t0 < seconds:
        await trio.sleep(0.25)
        peak = max(peak, proc.memory_info().rss)
    c1 = proc.cpu_times()
    wall = time.monotonic() - t0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return 100 * cpu / wall, peak / 2**20


async def ours(conv_s: float, idle_s: float) -> dict[str, Any]:
    import psutil

    async with open_simulator(sim_config(ping_interval=2.0)) as sim, tmpdir() as tmp:
        write_wav(tmp / "mic.wav", script(conv_s + idle_s + 30, [("silence", idle_s + 3)] + PATTERN * 200, seed=9))
        (tmp / "kioskd.toml").write_text(_toml(sim, tmp))
        notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await notify.bind(str(tmp / "notify.sock"))
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp / "notify.sock"), PYTHONPATH=str(REPO))
        t0 = time.monotonic()
        popen = subprocess.Popen([PY, "-m", "kioskd", "run", "--config", str(tmp / "kioskd.toml")], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ready = None
            with trio.move_on_after(30):
                while ready is None:
                    data = await notify.recv(4096)
                    if b"READY=1" in data.split(b"\n"):
                        ready = time.monotonic() - t0
            proc = psutil.Process(popen.pid)
            await trio.sleep(1.0)
            idle_cpu, idle_rss = await _measure(proc, idle_s)
            await trio.to_thread.run_sync(request, str(tmp / "control.sock"), "start")
            await sim.wait_for_conversation(0)
            conv_cpu, peak = await _measure(proc, conv_s)
            conv = sim.conversations[0]
            return {"ready_s": ready, "idle_cpu_pct": idle_cpu, "idle_rss_mb": idle_rss,
                    "conversation_cpu_pct": conv_cpu, "peak_rss_mb": max(peak, idle_rss),
                    "conversation_s": conv_s, "idle_s": idle_s, "agent_turns": len(conv.turns),
                    "audio_chunks": conv.audio_chunks}
        finally:
            popen.terminate()
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                popen.kill()
            notify.close()


async def official_cost(conv_s: float) -> dict[str, Any]:
    import psutil

    async with open_simulator(sim_config(ping_interval=2.0)) as sim:
        env = dict(os.environ, PYTHONPATH=f"{REPO / 'scripts'}:{REPO}")
        popen = subprocess.Popen([PY, "-m", "benchlib.official_proc", sim.api_base, sim.config.api_key,
                                  sim.config.agent_id, str(conv_s + 5)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            proc = psutil.Process(popen.pid)
            await sim.wait_for_conversation(0)
            await trio.sleep(0.5)
            cpu, peak = await _measure(proc, conv_s)
            return {"conversation_cpu_pct": cpu, "peak_rss_mb": peak, "agent_turns": len(sim.conversations[0].turns),
                    "note": "includes the modelled devices (threads in the same process)"}
        finally:
            popen.terminate()
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                popen.kill()


async def run(quick: bool, with_official: bool) -> dict[str, Any]:
    conv_s, idle_s = (6.0, 3.0) if quick else (60.0, 20.0)
    out: dict[str, Any] = {"ours": await ours(conv_s, idle_s)}
    if with_official:
        out["official"] = await official_cost(conv_s)
    return out

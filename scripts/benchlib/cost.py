"""Figure 9: cost. ``kioskd run`` as a subprocess (wav: microphone with the visitor speaking
0.8 s every 1.8 s, wav: speaker) against the in-process simulator:

* start-up: spawn → ``READY=1`` on a real ``$NOTIFY_SOCKET`` datagram socket;
* idle CPU (% of one core) before any conversation, once per trigger mode: ``manual``
  (the process that then holds the conversation), ``button`` (gpiozero's mock pin
  factory: no GPIO here) and ``vad`` (voice wake listening; the room is quiet);
* conversation CPU and peak RSS (sampled every 0.25 s) over a full-duplex conversation
  started with ``kioskd ctl start``; the simulator answers every turn with 3 s of audio;
* where it goes: CPU and wake-ups a second per thread (the Trio thread, ``kioskd-input``,
  ``kioskd-output``, …), at 20 ms and at 40 ms uplink messages;
* what one wake-up costs here (``time.sleep``, epoll, ``trio.sleep``), the unit of the rest.

CPU time is read from ``/proc/PID/task/*/schedstat`` (nanoseconds, summed over threads;
psutil's clock ticks are 10 ms, too coarse for an idle process over a few seconds), else
from psutil. The official client runs the same conversation in its own process (bench
devices modelled in that process; see official.py), measured the same way.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from kioskd.ops.ctl import request
from kioskd.simulator import open_simulator

from .common import REPO, script, write_wav
from .conversation import PATTERN, sim_config
from .ours import tmpdir

PY = sys.executable
SETTLE_S = 1.0
"""Seconds after READY=1 before idle is measured (start-up work done)."""


#: Uplink message lengths the conversation's CPU is also measured at (the default, 20 ms, is the main figure):
#: the cost follows the messages per second, and the uplink latency (figure 2) follows their length.
CHUNK_SWEEP_MS = (40,)


def _toml(sim: Any, tmp: Path, trigger: str = "manual", chunk_ms: int = 20) -> str:
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
chunk_ms = {chunk_ms}
echo = "off"
[conversation]
idle_timeout = 600.0
[trigger]
mode = "{trigger}"
[control]
socket = "{tmp / 'control.sock'}"
[log]
level = "warning"
"""


def _thread_cpu(pid: int) -> dict[int, tuple[str, float, int]]:
    """Per live thread of ``pid``: its name, seconds on a CPU so far (schedstat) and wake-ups so
    far (voluntary context switches: each is a sleep the thread woke from)."""
    out: dict[int, tuple[str, float, int]] = {}
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        try:
            ns = int((task / tid / "schedstat").read_text().split()[0])
            name = (task / tid / "comm").read_text().strip()
            status = (task / tid / "status").read_text()
            wakes = int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[int(tid)] = ("main" if int(tid) == pid else name, ns / 1e9, wakes)
    return out


def _cpu_seconds(proc: Any) -> float:
    """The process's CPU time so far: schedstat (ns) where readable, else psutil."""
    threads = _thread_cpu(proc.pid) if Path(f"/proc/{proc.pid}/task").is_dir() else {}
    if threads:
        return sum(sec for _, sec, _ in threads.values())
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _measure(proc: Any, seconds: float, by_thread: bool = False) -> dict[str, Any]:
    """CPU (% of one core), peak RSS (MB) and, if asked, CPU and wake-ups a second per thread of ``proc``
    over ``seconds``."""
    threads0 = _thread_cpu(proc.pid) if by_thread else {}
    c0 = _cpu_seconds(proc)
    t0 = time.monotonic()
    peak = proc.memory_info().rss
    while time.monotonic() - t0 < seconds:
        await trio.sleep(0.25)
        peak = max(peak, proc.memory_info().rss)
    c1 = _cpu_seconds(proc)
    wall = time.monotonic() - t0
    out: dict[str, Any] = {"cpu_pct": 100 * (c1 - c0) / wall, "peak_rss_mb": peak / 2**20}
    if by_thread:
        per: dict[str, float] = {}
        wakes: dict[str, float] = {}
        for tid, (name, sec, woke) in _thread_cpu(proc.pid).items():
            _, sec0, woke0 = threads0.get(tid, (name, 0.0, 0))
            per[name] = per.get(name, 0.0) + 100 * (sec - sec0) / wall
            wakes[name] = wakes.get(name, 0.0) + (woke - woke0) / wall
        out["threads_cpu_pct"] = dict(sorted(per.items(), key=lambda kv: -kv[1]))
        out["threads_wakeups_per_s"] = {name: wakes[name] for name in out["threads_cpu_pct"]}
    return out


@asynccontextmanager
async def _kioskd(sim: Any, tmp: Path, trigger: str, chunk_ms: int = 20) -> AsyncIterator[tuple[Any, float | None]]:
    """``kioskd run`` with trigger ``trigger``; yields (psutil process, seconds to READY=1)."""
    import psutil

    (tmp / "kioskd.toml").write_text(_toml(sim, tmp, trigger, chunk_ms))
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    (tmp / "notify.sock").unlink(missing_ok=True)
    await notify.bind(str(tmp / "notify.sock"))
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp / "notify.sock"), PYTHONPATH=str(REPO),
               GPIOZERO_PIN_FACTORY="mock")
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
        yield psutil.Process(popen.pid), ready
    finally:
        popen.terminate()
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            popen.kill()
        notify.close()


async def ours(conv_s: float, idle_s: float) -> dict[str, Any]:
    async with open_simulator(sim_config(ping_interval=2.0)) as sim, tmpdir() as tmp:
        write_wav(tmp / "mic.wav", script(conv_s + idle_s + 30, [("silence", idle_s + 3)] + PATTERN * 200, seed=9))
        idle: dict[str, Any] = {}
        for trigger in ("button", "vad"):
            async with _kioskd(sim, tmp, trigger) as (proc, _):
                await trio.sleep(SETTLE_S)
                idle[trigger] = await _measure(proc, idle_s, by_thread=True)
        async with _kioskd(sim, tmp, "manual") as (proc, ready):
            await trio.sleep(SETTLE_S)
            idle["manual"] = await _measure(proc, idle_s, by_thread=True)
            await trio.to_thread.run_sync(request, str(tmp / "control.sock"), "start")
            await sim.wait_for_conversation(0)
            conv = await _measure(proc, conv_s, by_thread=True)
            c = sim.conversations[0]
        by_chunk = {20: conv}
        for chunk_ms in CHUNK_SWEEP_MS:
            async with _kioskd(sim, tmp, "manual", chunk_ms) as (proc, _):
                await trio.sleep(SETTLE_S + idle_s)  # the same stretch of the microphone file as above
                n = len(sim.conversations)
                await trio.to_thread.run_sync(request, str(tmp / "control.sock"), "start")
                await sim.wait_for_conversation(n)
                by_chunk[chunk_ms] = await _measure(proc, conv_s, by_thread=True)
        return {"ready_s": ready, "idle_cpu_pct": idle["manual"]["cpu_pct"],
                "idle_rss_mb": idle["manual"]["peak_rss_mb"],
                "idle_cpu_pct_by_trigger": {k: v["cpu_pct"] for k, v in idle.items()},
                "idle_threads_cpu_pct_by_trigger": {k: v["threads_cpu_pct"] for k, v in idle.items()},
                "conversation_cpu_pct": conv["cpu_pct"],
                "conversation_threads_cpu_pct": conv["threads_cpu_pct"],
                "peak_rss_mb": max(conv["peak_rss_mb"], idle["manual"]["peak_rss_mb"]),
                "conversation_s": conv_s, "idle_s": idle_s, "agent_turns": len(c.turns),
                "audio_chunks": c.audio_chunks,
                "conversation_cpu_pct_by_chunk_ms": {ms: m["cpu_pct"] for ms, m in by_chunk.items()},
                "idle_threads_wakeups_per_s_by_trigger": {k: v["threads_wakeups_per_s"] for k, v in idle.items()},
                "conversation_threads_by_chunk_ms": {
                    ms: {"cpu_pct": m["threads_cpu_pct"], "wakeups_per_s": m["threads_wakeups_per_s"]}
                    for ms, m in by_chunk.items()}}


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
            m = await _measure(proc, conv_s, by_thread=True)
            return {"conversation_cpu_pct": m["cpu_pct"], "peak_rss_mb": m["peak_rss_mb"],
                    "conversation_threads_cpu_pct": m["threads_cpu_pct"],
                    "agent_turns": len(sim.conversations[0].turns),
                    "note": "includes the modelled devices (threads in the same process)"}
        finally:
            popen.terminate()
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                popen.kill()


_WAKE_COST = """
import select, sys, time
import trio
n = int(sys.argv[1])
def per_wake(fn):
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6
ep = select.epoll()
out = {"time.sleep": per_wake(lambda: time.sleep(0.02)), "epoll.poll": per_wake(lambda: ep.poll(0.02))}
async def loop():
    t0 = time.process_time()
    for _ in range(n):
        await trio.sleep(0.02)
    out["trio.sleep"] = (time.process_time() - t0) / n * 1e6
trio.run(loop)
print(repr(out))
"""


async def wake_cost(wakes: int) -> dict[str, float]:
    """CPU µs per wake-up from a 20 ms sleep, in a fresh process: ``time.sleep``, a bare epoll,
    and ``trio.sleep`` (a pass of Trio's loop) — the unit of the cost figures on this machine."""
    done = await trio.run_process([PY, "-c", _WAKE_COST, str(wakes)], capture_stdout=True)
    result: dict[str, float] = ast.literal_eval(done.stdout.decode().strip())
    return result


async def run(quick: bool, with_official: bool) -> dict[str, Any]:
    conv_s, idle_s = (10.0, 6.0) if quick else (60.0, 20.0)
    out: dict[str, Any] = {"ours": await ours(conv_s, idle_s), "wake_cost_us": await wake_cost(100 if quick else 300)}
    if with_official:
        out["official"] = await official_cost(conv_s)
        o, t = out["ours"], out["official"]["conversation_cpu_pct"]
        if t > 0:
            idle = o["idle_cpu_pct_by_trigger"]
            out["ratios"] = {"conversation_cpu_vs_official": o["conversation_cpu_pct"] / t,
                             "idle_cpu_vs_official_conversation": {k: v / t for k, v in idle.items()},
                             "peak_rss_vs_official": o["peak_rss_mb"] / out["official"]["peak_rss_mb"]}
    return out

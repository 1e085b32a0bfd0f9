"""Figure 10: the signing backend at fleet scale — one and two replicas on one Redis.

Everything runs on this machine: a real ``redis-server``, one or two real
``kioskd backend`` processes (``--listen`` per replica, as ``kioskd-backend@PORT``
runs them), a stub of the ElevenLabs endpoint in its own process (answers at once,
keep-alive), and the load generator here (raw HTTP/1.1 keep-alive over Trio sockets,
so the generator costs as little CPU as possible). 10,000 kiosks are registered in
Redis; each request uses the next kiosk's token, so buckets, registry look-ups and
heartbeats spread over the whole fleet. Rate limits are set high: this measures
throughput, not 429s.

- signed URLs: a closed loop of ``CONNECTIONS_PER_REPLICA`` connections per replica,
  throughput and latency, for one replica and for two;
- heartbeats: 10,000 kiosks at a 30 s interval (333/s), open loop (latency counted
  from when each was due, so a stall is not hidden), alone and while signed URLs flow
  on two replicas at half their closed-loop maximum (also open loop);
- ``/healthz`` on one replica: the HTTP stack's own floor (no auth, no Redis, no upstream);
- the replicas' CPU per answered request: on a machine shared with other work the
  rates follow the CPU the replicas get, the CPU cost per request much less so.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from . import cpucap, native_load
from .common import REPO, summary

KIOSKS = 10_000
HEARTBEAT_INTERVAL = 30.0
HEARTBEAT_RATE = KIOSKS / HEARTBEAT_INTERVAL  # 333 per second
OPEN_LOOP_WORKERS = 32
#: While heartbeats flow, signed URLs come at this share of the two replicas' closed-loop maximum.
MIXED_SIGNED_SHARE = 0.5
CONNECTIONS_PER_REPLICA = 8
#: Share of a core each replica gets in the capped scaling phases (see :mod:`.cpucap`).
REPLICA_CAP = 0.4
AGENT = "bench_agent"
STARTUP_TIMEOUT = 60.0
ADD_CONCURRENCY = 32

STATUS = {
    "state": "idle",
    "reason": "",
    "problems": [],
    "version": "0.1.0",
    "uptime": 86400.0,
    "heartbeat_interval": HEARTBEAT_INTERVAL,
    "backend": {"healthy": True, "last_error": ""},
    "counters": {"conversations": 42, "failed_starts": 0, "resumed": 1, "dropped_commands": 0},
    "audio": {"input": {"name": "USB Audio Device: mic", "rate": 48000, "open": True},
              "output": {"name": "USB Audio Device: speaker", "rate": 48000, "open": True},
              "underruns": 0, "dropped_frames": 0},
    "last_end": "visitor ended",
}


OPERATOR = "bench-operator-token-0123456789abcdefghijklmnop"
SCRAPES = 3


def _token(i: int) -> str:
    return f"bench-kiosk-{i:05d}-0123456789abcdefghijklmnopqrstuvwxyz"


# --------------------------------------------------------------------------- a tiny HTTP/1.1 keep-alive client


class Connection:
    """One keep-alive HTTP/1.1 connection; :meth:`request` returns (status, seconds)."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self._stream = stream
        self._host = host
        self._buffer = bytearray()

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(await trio.open_tcp_stream("127.0.0.1", port), f"127.0.0.1:{port}")

    async def request(self, method: str, path: str, token: str, body: bytes = b"") -> int:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {len(body)}\r\n")
        if body:
            head += "Content-Type: application/json\r\n"
        await self._stream.send_all(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self._buffer:
            await self._fill()
        end = self._buffer.index(b"\r\n\r\n") + 4
        header = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[:end]
        status = int(header.split(" ", 2)[1])
        length = 0
        for line in header.split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        while len(self._buffer) < length:
            await self._fill()
        del self._buffer[:length]
        return status

    async def _fill(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer += data

    async def aclose(self) -> None:
        await self._stream.aclose()


# --------------------------------------------------------------------------- the upstream stub (own process)


SIGNED_URL = "wss://127.0.0.1/v1/convai/conversation?agent_id=bench_agent&token=t"
#: The upstream stub: "nginx" when installed, else a Python one (~0.1 ms of CPU per request).
STUB = "nginx" if native_load.have_nginx() else "python"


async def _stub_serve(port: int) -> None:
    body = json.dumps({"signed_url": SIGNED_URL}).encode()
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
             + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def handle(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:  # GET requests: no body
                    del buffer[: buffer.index(b"\r\n\r\n") + 4]
                    await stream.send_all(reply)
        except trio.BrokenResourceError:
            return

    await trio.serve_tcp(handle, port, host="127.0.0.1")


def stub_main(port: int) -> None:
    """Entry point of the upstream stub process."""
    trio.run(_stub_serve, port)


# --------------------------------------------------------------------------- the rig


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_port(port: int, proc: trio.Process) -> None:
    with trio.fail_after(STARTUP_TIMEOUT):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def _register(redis_url: str, config_path: Path) -> None:
    """10,000 kiosks in the Redis registry, through the backend's own store."""
    from kioskd.backend.redis_store import open_redis_store
    from kioskd.backend.server import hash_token
    from kioskd.backend.server_config import KioskEntry, load_server_config

    config = load_server_config(config_path)
    async with open_redis_store(config) as store:
        todo = iter(range(KIOSKS))

        async def worker() -> None:
            for i in todo:
                await store.add_kiosk(KioskEntry(id=f"k{i:05d}", token_sha256=hash_token(_token(i)), agents=[AGENT]))

        async with trio.open_nursery() as nursery:
            for _ in range(ADD_CONCURRENCY):
                nursery.start_soon(worker)


#: The closed loops' generator: "wrk" when installed (a few µs of CPU per request), else "python".
LOAD_GENERATOR = "wrk" if native_load.have_wrk() else "python"


async def _signed_url_load(
    ports: list[int], seconds: float, first_kiosk: int, path: str = f"/signed-url?agent_id={AGENT}"
) -> dict[str, Any]:
    if LOAD_GENERATOR == "wrk":
        return await native_load.wrk_load(ports, seconds, first_kiosk, KIOSKS, path, CONNECTIONS_PER_REPLICA)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(first_kiosk, 10**9))
    deadline = trio.current_time() + seconds

    async def loop(port: int) -> None:
        conn = await Connection.open(port)
        try:
            while trio.current_time() < deadline:
                i = next(counter) % KIOSKS
                started = time.perf_counter()
                status = await conn.request("GET", path, _token(i))
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await conn.aclose()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for port in ports:
            for _ in range(CONNECTIONS_PER_REPLICA):
                nursery.start_soon(loop, port)
    wall = time.perf_counter() - started
    ok = statuses.get(200, 0)
    return {"per_s": ok / wall, "latency": summary(latencies, scale=1000.0), "statuses": statuses,
            "connections": CONNECTIONS_PER_REPLICA * len(ports), "seconds": round(wall, 2)}


async def _open_loop(ports: list[int], rate: float, seconds: float, heartbeat: bool, first: int) -> dict[str, Any]:
    """Requests due at a fixed ``rate`` (open loop); latency counted from when each was due, so stalls show."""
    body = json.dumps(STATUS).encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = int(seconds * rate)
    schedule = iter(range(total))
    t0 = time.perf_counter() + 0.1

    async def worker(w: int) -> None:
        conn = await Connection.open(ports[w % len(ports)])
        try:
            for k in schedule:
                due = t0 + k / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await trio.sleep(delay)
                token = _token((first + k) % KIOSKS)
                if heartbeat:
                    status = await conn.request("POST", "/heartbeat", token, body)
                else:
                    status = await conn.request("GET", f"/signed-url?agent_id={AGENT}", token)
                latencies.append(time.perf_counter() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        for w in range(OPEN_LOOP_WORKERS):
            nursery.start_soon(worker, w)
    achieved = total / max(1e-9, time.perf_counter() - t0)
    return {"rate_per_s": achieved, "target_rate_per_s": rate, "latency": summary(latencies, scale=1000.0),
            "statuses": statuses, **({"kiosks": KIOSKS, "bytes": len(body)} if heartbeat else {})}


async def _fleet_views(port: int) -> dict[str, Any]:
    """Seconds for ``/fleet.json`` and ``/metrics`` with every kiosk registered and heard from."""
    conn = await Connection.open(port)
    out: dict[str, Any] = {}
    try:
        for path in ("/fleet.json", "/metrics"):
            times = []
            for _ in range(SCRAPES):
                started = time.perf_counter()
                status = await conn.request("GET", path, OPERATOR)
                times.append(time.perf_counter() - started)
                assert status == 200, (path, status)
            out[path] = summary(times, scale=1000.0)
    finally:
        await conn.aclose()
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


#: Whose CPU each phase reports per answered request: filled in by :func:`run` (pids; "loadgen" is this process).
PARTIES: dict[str, list[int]] = {}


async def _measured(procs: list[trio.Process], phase: Any) -> dict[str, Any]:
    """Run ``phase`` and add the CPU per answered request: the replicas' (what a quiet machine's capacity
    follows), and everyone's on the two cores (Redis, the upstream stub, this load generator)."""
    parties = {"replicas": [p.pid for p in procs], **PARTIES}
    before = {name: _cpu_seconds(pids) for name, pids in parties.items()}
    before_self = time.process_time()
    out: dict[str, Any] = await phase
    answered = sum(out.get("statuses", {}).values()) or 1
    cpu = {name: (_cpu_seconds(pids) - before[name]) * 1000 / answered for name, pids in parties.items()}
    cpu["loadgen"] = (time.process_time() - before_self + out.pop("loadgen_cpu_s", 0.0)) * 1000 / answered
    out["replica_cpu_ms_per_request"] = cpu["replicas"]
    out["cpu_ms_per_request"] = cpu
    return out


async def run(quick: bool) -> dict[str, Any]:
    """The backend figure: one replica, two replicas, two replicas with 10,000 kiosks' heartbeats."""
    sys.path.insert(0, str(REPO / "tests"))
    from redis_server import RedisServer

    seconds = 5.0 if quick else 20.0
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"kioskd-bench-backend-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(workdir)
    redis.start()
    stub_port, ports = _free_port(), [_free_port(), _free_port()]
    config = workdir / "backend.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\napi_base = "http://127.0.0.1:{stub_port}"\nredis_url = "{redis.url}"\n'
        f"rate_per_minute = 1000000\nburst = 1000000\nheartbeat_interval = {HEARTBEAT_INTERVAL}\n"
        f'operator_token_sha256 = "{hashlib.sha256(OPERATOR.encode()).hexdigest()}"\n'
    )
    env = {**os.environ, "ELEVENLABS_API_KEY": "sk_bench_not_a_real_key", "PYTHONUNBUFFERED": "1"}
    procs: list[trio.Process] = []
    out: dict[str, Any] = {"kiosks": KIOSKS, "seconds_per_phase": seconds, "loadavg_before": os.getloadavg()}
    out["load_generator"] = LOAD_GENERATOR
    out["stub"] = STUB
    try:
        if STUB == "nginx":
            stub = await native_load.start_nginx(workdir, stub_port, json.dumps({"signed_url": SIGNED_URL}))
        else:
            stub = await trio.lowlevel.open_process(
                [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); "
                 f"from benchlib.backend import stub_main; stub_main({stub_port})"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        procs.append(stub)
        await _wait_port(stub_port, stub)
        PARTIES.update(redis=[redis.pid], stub=native_load.nginx_pids(stub.pid) if STUB == "nginx" else [stub.pid])
        t0 = time.perf_counter()
        await _register(redis.url, config)
        out["register_10k_s"] = round(time.perf_counter() - t0, 1)
        for port in ports:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "kioskd", "backend", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
                env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            await _wait_port(port, proc)
        replicas = procs[1:]
        await _signed_url_load(ports, 1.0, 0)  # warm-up: connections, Lua scripts loaded
        out["healthz_one_replica"] = await _measured(
            replicas[:1], _signed_url_load(ports[:1], seconds / 2, 0, "/healthz")
        )
        out["one_replica"] = await _measured(replicas[:1], _signed_url_load(ports[:1], seconds, 1000))
        out["two_replicas"] = await _measured(replicas, _signed_url_load(ports, seconds, 4000))
        if cpucap.available():  # replicas that cannot each take a whole core: do they add up?
            capped: dict[str, Any] = {"share_of_a_core": REPLICA_CAP}
            with cpucap.capped([p.pid for p in replicas], REPLICA_CAP):
                capped["one_replica"] = await _measured(replicas[:1], _signed_url_load(ports[:1], seconds, 2000))
                capped["two_replicas"] = await _measured(replicas, _signed_url_load(ports, seconds, 5000))
            capped["scaling"] = capped["two_replicas"]["per_s"] / max(1e-9, capped["one_replica"]["per_s"])
            out["capped"] = capped
        out["heartbeats_alone"] = await _measured(replicas, _open_loop(ports, HEARTBEAT_RATE, seconds, True, 0))
        signed_rate = max(1.0, MIXED_SIGNED_SHARE * out["two_replicas"]["per_s"])
        mixed: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:

            async def signed() -> None:
                mixed["signed_urls"] = await _open_loop(ports, signed_rate, seconds, False, 7000)

            nursery.start_soon(signed)
            mixed["heartbeats"] = await _open_loop(ports, HEARTBEAT_RATE, seconds, True, 0)
        out["two_replicas_with_heartbeats"] = mixed
        out["fleet_views"] = await _fleet_views(ports[0])
        one, two = out["one_replica"]["per_s"], out["two_replicas"]["per_s"]
        out["scaling"] = two / one if one else None
        out["loadavg_after"] = os.getloadavg()
    finally:
        for proc in procs:
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
        redis.stop()
    return out

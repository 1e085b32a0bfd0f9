"""Heartbeats, the fleet view, metrics, Redis outages and replicas: real sockets, real redis-server, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from kioskd.backend.fleet import MAX_HEARTBEAT_BYTES, fleet_view
from kioskd.backend.server_config import KioskEntry
from kioskd.backend.store import Heartbeat, KioskRecord
from redis_server import RedisServer, free_port, running_redis
from test_backend_server import (
    API_KEY,
    TOKEN_A,
    TOKEN_B,
    FakeElevenLabs,
    backend_config,
    bearer,
    serving_app,
    serving_backend,
    sha,
)

IO_TIMEOUT = 20
OPERATOR = "operator-token-OOOOOOOOOOOOOOOOOOOOOOOO"
METRICS = "metrics-token-MMMMMMMMMMMMMMMMMMMMMMMMMM"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest, redis: RedisServer) -> str:
    redis.flush()
    return redis.url if request.param == "redis" else ""


# --------------------------------------------------------------------------- heartbeats and the fleet view


async def test_heartbeat_then_fleet_json_shows_it(redis_url: str) -> None:
    upstream = FakeElevenLabs()
    status = {"state": "idle", "version": "0.1.0", "problems": ["speaker: no device"], "heartbeat_interval": 60,
              "counters": {"conversations": 4}, "uptime": 12.5}
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base:
            config = backend_config(api_base, redis_url=redis_url, operator_token_sha256=sha(OPERATOR))
            async with serving_backend(config) as client:
                beat = await client.post("/heartbeat", json=status, headers=bearer(TOKEN_A))
                await client.post("/heartbeat", json={"state": "conversation"}, headers=bearer(TOKEN_B))
                anonymous = await client.post("/heartbeat", json=status)
                no_state = await client.post("/heartbeat", json={"version": "1"}, headers=bearer(TOKEN_A))
                not_object = await client.post("/heartbeat", content=b"[1]", headers=bearer(TOKEN_A))
                anonymous_bad = await client.post("/heartbeat", content=b"[1]")  # the token is checked first
                huge = await client.post(
                    "/heartbeat", json={"state": "idle", "pad": "x" * MAX_HEARTBEAT_BYTES}, headers=bearer(TOKEN_A)
                )
                fleet = await client.get("/fleet.json", headers=bearer(OPERATOR))
                as_kiosk = await client.get("/fleet.json", headers=bearer(TOKEN_A))
                page = await client.get("/fleet", headers=bearer(OPERATOR))
    assert beat.status_code == 200 and beat.json()["ok"] is True and beat.json()["kiosk"] == "lobby"
    assert anonymous.status_code == 401 and anonymous_bad.status_code == 401
    assert no_state.status_code == 400 and "'state' is required" in no_state.json()["detail"]
    assert not_object.status_code == 400 and "JSON object" in not_object.json()["detail"]
    assert huge.status_code == 413
    assert as_kiosk.status_code == 401
    kiosks = fleet.json()["kiosks"]
    assert [k["id"] for k in kiosks] == ["lobby", "cafe"]  # problems first
    lobby, cafe = kiosks
    assert lobby["state"] == "idle" and lobby["online"] is True and lobby["version"] == "0.1.0"
    assert lobby["problems"] == ["speaker: no device"] and lobby["status"] == status
    assert abs(lobby["last_seen"] - beat.json()["last_seen"]) < 1e-3
    assert cafe["state"] == "conversation" and cafe["problems"] == []
    assert page.status_code == 200 and "speaker: no device" in page.text and 'http-equiv="refresh"' in page.text
    assert TOKEN_A not in page.text and OPERATOR not in page.text


async def test_heartbeats_without_a_valid_token_share_the_signed_url_throttle() -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base:
            config = backend_config(api_base, unauthenticated_burst=3, unauthenticated_rate_per_minute=0.6)
            async with serving_backend(config) as client:
                guesses = [
                    (await client.post("/heartbeat", json={"state": "idle"}, headers=bearer(f"guess-{i}"))).status_code
                    for i in range(4)
                ]
                signed = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer("guess-5"))
    assert guesses == [401, 401, 401, 429]
    assert signed.status_code == 429 and int(signed.headers["retry-after"]) > 0


async def test_fleet_needs_the_operator_login_form_sets_a_cookie() -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base:
            off = backend_config(api_base)
            async with serving_backend(off) as client:
                disabled = await client.get("/fleet.json", headers=bearer(OPERATOR))
            async with serving_backend(backend_config(api_base, operator_token_sha256=sha(OPERATOR))) as client:
                form = await client.get("/fleet")
                wrong = await client.post("/fleet/login", data={"token": "guess"})
                login = await client.post("/fleet/login", data={"token": OPERATOR})
                cookie = login.cookies.get("kioskd_operator")
                with_cookie = await client.get("/fleet.json")
    assert disabled.status_code == 404 and "operator_token_sha256" in disabled.json()["detail"]
    assert form.status_code == 401 and '<form method="post" action="/fleet/login">' in form.text
    assert (
        wrong.status_code == 401
        and "not the operator" in wrong.text
        and "kioskd_operator" not in wrong.headers.get("set-cookie", "")
    )
    assert login.status_code == 303 and login.headers["location"] == "/fleet"
    set_cookie = login.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and cookie == OPERATOR
    assert with_cookie.status_code == 200 and len(with_cookie.json()["kiosks"]) == 2


def test_fleet_view_offline_after_three_missed_heartbeats_problems_first() -> None:
    records = [
        KioskRecord(KioskEntry("a", sha("a"), ["x"]), "toml"),
        KioskRecord(KioskEntry("b", sha("b"), ["x"]), "toml"),
        KioskRecord(KioskEntry("c", sha("c"), ["x"]), "registry", revoked=True),
        KioskRecord(KioskEntry("d", sha("d"), ["x"]), "registry"),
    ]
    beats = [
        Heartbeat("a", {"state": "idle"}, 1000.0),
        Heartbeat("b", {"state": "idle", "heartbeat_interval": 10}, 1000.0),
        Heartbeat("c", {"state": "idle"}, 1170.0),
    ]
    at_180 = {row.id: row for row in fleet_view(records, beats, 1180.0, 60.0)}
    at_181 = fleet_view(records, beats, 1181.0, 60.0)
    assert at_180["a"].online and at_180["a"].problems == []
    assert not at_180["b"].online and at_180["b"].problems == ["offline: no heartbeat for 180 s"]  # 3 × its 10 s
    assert at_180["c"].problems == ["token revoked"] and at_180["c"].revoked
    assert at_180["d"].state == "unknown" and at_180["d"].problems == ["no heartbeat yet"]
    assert [row.id for row in at_181] == ["a", "b", "c", "d"]  # all have problems now: then by id
    assert not at_181[0].online


async def test_metrics_count_results_and_show_the_fleet() -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base:
            async with serving_backend(backend_config(api_base)) as client:
                for _ in range(4):
                    await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
                await client.get("/signed-url", params={"agent_id": "agent_1"})
                await client.post("/heartbeat", json={"state": "idle"}, headers=bearer(TOKEN_A))
                upstream.mode = "error500"
                await client.get("/signed-url", params={"agent_id": "agent_3"}, headers=bearer(TOKEN_B))
                open_metrics = await client.get("/metrics")
            async with serving_backend(backend_config(api_base, metrics_token_sha256=sha(METRICS))) as client:
                closed = await client.get("/metrics")
                with_token = await client.get("/metrics", headers=bearer(METRICS))
    text = open_metrics.text
    assert open_metrics.status_code == 200 and open_metrics.headers["content-type"].startswith("text/plain")
    assert 'kioskd_signed_urls_total{result="issued"} 3.0' in text
    assert 'kioskd_signed_urls_total{result="rate_limited"} 1.0' in text
    assert 'kioskd_signed_urls_total{result="unauthorized"} 1.0' in text
    assert 'kioskd_signed_urls_total{result="upstream"} 1.0' in text
    assert "kioskd_upstream_errors_total 1.0" in text
    assert 'kioskd_request_duration_seconds_count{route="signed_url"} 6.0' in text
    assert 'kioskd_request_duration_seconds_count{route="heartbeat"} 1.0' in text
    assert 'kioskd_kiosks{state="idle"} 1.0' in text and 'kioskd_kiosks{state="unknown"} 1.0' in text
    assert 'kioskd_kiosk_last_seen_seconds{kiosk="lobby"}' in text
    assert closed.status_code == 401 and with_token.status_code == 200


async def test_upstream_failure_refunds_the_charge() -> None:
    upstream = FakeElevenLabs(mode="error500")
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            failed = [
                await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
                for _ in range(4)
            ]
            upstream.mode = "ok"
            ok = [
                await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
                for _ in range(4)
            ]
    assert [r.status_code for r in failed] == [502] * 4
    assert [r.status_code for r in ok] == [200, 200, 200, 429]


# --------------------------------------------------------------------------- Redis down: fail closed, recover


async def test_redis_down_is_503_with_retry_after_and_recovers(tmp_path: Path) -> None:
    upstream = FakeElevenLabs()
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with trio.fail_after(IO_TIMEOUT):
            async with (
                serving_app(upstream.app()) as api_base,
                serving_backend(backend_config(api_base, redis_url=redis.url)) as client,
            ):
                before = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
                redis.stop()
                down = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
                beat_down = await client.post("/heartbeat", json={"state": "idle"}, headers=bearer(TOKEN_A))
                health = await client.get("/healthz")
                redis.start()
                after = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    finally:
        redis.stop()
    assert before.status_code == 200
    assert down.status_code == 503 and down.headers["retry-after"] == "5" and down.json()["error"] == "unavailable"
    assert beat_down.status_code == 503 and health.status_code == 200
    assert after.status_code == 200
    assert len(upstream.seen_keys) == 2  # nothing was asked upstream while the state was unreachable


# --------------------------------------------------------------------------- replicas and the registry command


def _write_config(path: Path, api_base: str, redis_url: str, listen: str) -> None:
    path.write_text(
        f'listen = "{listen}"\napi_base = "{api_base}"\nrate_per_minute = 0.6\nburst = 3\n'
        f'redis_url = "{redis_url}"\n'
        f'[[kiosk]]\nid = "lobby"\ntoken_sha256 = "{sha(TOKEN_A)}"\nagents = ["agent_1"]\n'
    )


def _kiosks_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kioskd", "backend", "kiosks", "--config", str(config), *args],
        capture_output=True, text=True, timeout=IO_TIMEOUT, cwd=ROOT,
    )


@asynccontextmanager
async def replicas(
    tmp_path: Path, api_base: str, redis_url: str, n: int
) -> AsyncIterator[tuple[Path, list[httpx.AsyncClient]]]:
    """``n`` real ``kioskd backend`` processes sharing ``redis_url``; yields the config and a client per replica."""
    env = {**os.environ, "ELEVENLABS_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
    procs, clients = [], []
    config = tmp_path / "backend.toml"
    _write_config(config, api_base, redis_url, "127.0.0.1:8700")
    try:
        for i in range(n):
            port = free_port()
            log = (tmp_path / f"backend-{i}.log").open("wb")
            procs.append(await trio.lowlevel.open_process(  # as kioskd-backend@PORT.service runs them
                [sys.executable, "-m", "kioskd", "backend", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            ))
            clients.append(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=IO_TIMEOUT))
        for i, (proc, client) in enumerate(zip(procs, clients, strict=True)):
            while True:
                assert proc.poll() is None, (tmp_path / f"backend-{i}.log").read_text()
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await trio.sleep(0.05)
        yield config, clients
    finally:
        for client in clients:
            await client.aclose()
        for proc in procs:
            proc.terminate()
            await proc.wait()


async def test_two_replicas_share_one_allowance_and_the_registry(tmp_path: Path, redis: RedisServer) -> None:
    redis.flush()
    upstream = FakeElevenLabs()
    with trio.fail_after(60):
        async with (
            serving_app(upstream.app()) as api_base,
            replicas(tmp_path, api_base, redis.url, 2) as (config, (r1, r2)),
        ):
            codes = []
            for i in range(6):
                client = (r1, r2)[i % 2]
                r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
                codes.append(r.status_code)
            added = await trio.to_thread.run_sync(_kiosks_cli, config, "add", "cafe", "--agent", "agent_1")
            token = next(line.split(" = ", 1)[1] for line in added.stdout.splitlines() if line.startswith("token = "))
            new_kiosk = [
                await c.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(token)) for c in (r1, r2)
            ]
            listed = await trio.to_thread.run_sync(_kiosks_cli, config, "list", "--json")
            revoked = await trio.to_thread.run_sync(_kiosks_cli, config, "revoke", "cafe")
            after_revoke = [await c.post("/heartbeat", json={"state": "idle"}, headers=bearer(token)) for c in (r1, r2)]
            unknown = await trio.to_thread.run_sync(_kiosks_cli, config, "revoke", "nobody")
    assert codes == [200, 200, 200, 429, 429, 429]  # burst 3 across both replicas, not 3 each
    assert added.returncode == 0, added.stderr
    assert [r.status_code for r in new_kiosk] == [200, 200]
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows == [
        {"id": "lobby", "agents": ["agent_1"], "source": "toml", "revoked": False},
        {"id": "cafe", "agents": ["agent_1"], "source": "registry", "revoked": False},
    ]
    assert revoked.returncode == 0
    assert [r.status_code for r in after_revoke] == [401, 401]  # refused by every replica on its next request
    assert unknown.returncode == 1 and "no kiosk 'nobody'" in unknown.stderr
    assert token not in listed.stdout


def test_kiosks_cli_without_redis_prints_the_toml_table(tmp_path: Path) -> None:
    config = tmp_path / "backend.toml"
    _write_config(config, "https://api.elevenlabs.io", "", "127.0.0.1:8700")
    added = _kiosks_cli(config, "add", "cafe", "--agent", "agent_9")
    revoke = _kiosks_cli(config, "revoke", "lobby")
    duplicate = _kiosks_cli(config, "add", "lobby", "--agent", "agent_9")
    assert added.returncode == 0
    token = next(line.split(" = ", 1)[1] for line in added.stdout.splitlines() if line.startswith("token = "))
    assert f'token_sha256 = "{sha(token)}"' in added.stdout and 'agents = ["agent_9"]' in added.stdout
    assert revoke.returncode == 2 and "remove the [[kiosk]] table" in revoke.stderr
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr


def test_kiosks_cli_with_redis_down_names_it(tmp_path: Path) -> None:
    config = tmp_path / "backend.toml"
    _write_config(config, "https://api.elevenlabs.io", f"redis://127.0.0.1:{free_port()}/0", "127.0.0.1:8700")
    listed = _kiosks_cli(config, "list")
    assert listed.returncode == 1 and "redis at redis://127.0.0.1" in listed.stderr


@pytest.mark.parametrize("command", [["kiosks", "list"], []])
def test_a_bad_backend_config_is_named_by_the_command_that_read_it(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "backend.toml"
    config.write_text('redis_url = 7\n')
    result = subprocess.run(
        [sys.executable, "-m", "kioskd", "backend", *command[:1], "--config", str(config), *command[1:]],
        capture_output=True, text=True, timeout=IO_TIMEOUT, cwd=ROOT, env={**os.environ, "ELEVENLABS_API_KEY": "k"},
    )
    prog = " ".join(["kioskd backend", *command[:1]])
    assert (result.returncode, result.stderr) == (2, f"{prog}: redis_url: expected a string, got int 7\n")

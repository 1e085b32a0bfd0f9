"""Kiosk heartbeats against the real ``kioskd backend`` (in virtual time).

Idle kiosks stop minting URLs to check health.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from kioskd.backend.client import SignedUrlProvider
from kioskd.backend.client_config import BackendConfig
from kioskd.backend.heartbeat import HeartbeatSender, heartbeat_url
from kioskd.backoff import Backoff
from kioskd.config import NetworkConfig
from kioskd.simulator import SimulatorConfig, open_simulator
from redis_server import free_port
from test_backend_server import TOKEN_A, FakeElevenLabs, backend_config, bearer, serving_app, serving_backend, sha

TIMEOUT = 3600  # virtual seconds: the clock jumps while everything waits
OPERATOR = "operator-token-heartbeat-OOOOOOOOOOOOOO"


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


@pytest.mark.parametrize(
    ("url", "override", "expected"),
    [
        ("https://x/signed-url", "", "https://x/heartbeat"),
        ("https://x:8443/api/v1/signed-url?region=eu", "", "https://x:8443/api/v1/heartbeat"),
        ("https://x/signed-url", "https://y/beat", "https://y/beat"),
    ],
)
def test_heartbeat_url_defaults_to_the_sibling_of_url(url: str, override: str, expected: str) -> None:
    assert heartbeat_url(BackendConfig(url=url, heartbeat_url=override)) == expected


class Kiosk:
    """A provider and a heartbeat sender wired the way ``kioskd run`` wires them."""

    def __init__(self, url: str, token: str, agent_id: str = "agent_1", **backend: object) -> None:
        self.backend = BackendConfig(url=url, **backend)  # type: ignore[arg-type]
        self.provider = SignedUrlProvider(
            self.backend, NetworkConfig(), agent_id, token, backoff=Backoff(0.5, 30.0, rng=random.Random(0))
        )
        self.status = {"state": "idle", "problems": [], "counters": {"conversations": 0}}
        self.sender = HeartbeatSender(self.backend, token, lambda: self.status, self.provider)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.provider.run)
            await nursery.start(self.sender.run)
            yield
            nursery.cancel_scope.cancel()
        await self.provider.aclose()
        await self.sender.aclose()


@pytest.mark.parametrize(("prefetch", "heartbeats", "upstream_calls"), [
    (False, 60.0, 1),  # one fetch at start checks the whole path; then heartbeats only: no URL minted while idle
    (True, 60.0, 4),  # the prefetched URL refreshed at 0, 600, 1200, 1800 s only
    (True, 0.0, 31),  # heartbeats off: a health fetch every 60 s, as before
])
async def test_idle_kiosk_health_by_heartbeat(
    virtual_clock: trio.testing.MockClock, prefetch: bool, heartbeats: float, upstream_calls: int
) -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(TIMEOUT):
        async with serving_app(upstream.app()) as api_base:
            config = backend_config(api_base, rate_per_minute=600, burst=100, operator_token_sha256=sha(OPERATOR))
            async with serving_backend(config) as client:
                kiosk = Kiosk(
                    f"{client.base_url}/signed-url", TOKEN_A, prefetch=prefetch, heartbeat_interval=heartbeats
                )
                async with kiosk.running():
                    await trio.sleep(1800.5)
                    healthy = kiosk.provider.healthy
                    fleet = (await client.get("/fleet.json", headers=bearer(OPERATOR))).json()["kiosks"]
    assert healthy
    assert len(upstream.seen_keys) == upstream_calls
    lobby = next(k for k in fleet if k["id"] == "lobby")
    if heartbeats:
        assert kiosk.sender.sent == 31  # at 0, 60, …, 1800 s
        assert lobby["online"] and lobby["state"] == "idle" and lobby["version"]
        assert lobby["status"]["heartbeat_interval"] == 60.0 and lobby["status"]["uptime"] == pytest.approx(1800, abs=1)
    else:
        assert kiosk.sender.sent == 0 and lobby["state"] == "unknown"


async def test_lost_heartbeats_turn_the_kiosk_unhealthy_and_back(virtual_clock: trio.testing.MockClock) -> None:
    upstream = FakeElevenLabs()
    port = free_port()
    kiosk = Kiosk(f"http://127.0.0.1:{port}/signed-url", TOKEN_A, prefetch=False, heartbeat_interval=60.0)

    async def backend(api_base: str, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with serving_backend(backend_config(api_base, listen=f"127.0.0.1:{port}")):
                task_status.started(scope)
                await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with serving_app(upstream.app()) as api_base, trio.open_nursery() as nursery:
            running = await nursery.start(backend, api_base)
            async with kiosk.running():
                await trio.sleep(120.5)
                up = kiosk.provider.healthy
                running.cancel()  # the backend goes away after the heartbeat at 120 s
                await trio.sleep(59.0)
                still = kiosk.provider.healthy  # nothing asked yet: no news
                await trio.sleep(1.0)
                down = (kiosk.provider.healthy, kiosk.provider.last_error)  # the heartbeat at 180 s failed
                await nursery.start(backend, api_base)
                await trio.sleep(60.0)
                back = kiosk.provider.healthy  # answered at 240 s
            nursery.cancel_scope.cancel()
    assert (up, still) == (True, True)
    assert down == (False, "network: heartbeat failed: ConnectError")
    assert back is True
    assert len(upstream.seen_keys) == 1  # the fetch at start; none for health while idle


async def test_revoked_or_unknown_token_heartbeat_is_unhealthy(virtual_clock: trio.testing.MockClock) -> None:
    upstream = FakeElevenLabs()
    async with serving_app(upstream.app()) as api_base:
        with trio.fail_after(TIMEOUT):
            async with serving_backend(backend_config(api_base)) as client:
                kiosk = Kiosk(f"{client.base_url}/signed-url", "not-a-token", prefetch=False, heartbeat_interval=60.0)
                async with kiosk.running():
                    await trio.sleep(1.0)
                    state = (kiosk.provider.healthy, kiosk.provider.last_error, kiosk.provider.heartbeats)
    assert state == (False, "unauthorized: the backend rejected this kiosk's token (HTTP 401)", True)


async def test_backend_without_heartbeats_falls_back_to_fetches(virtual_clock: trio.testing.MockClock) -> None:
    """The simulator's signing backend has no /heartbeat: the kiosk checks health by signed URL as before."""
    async with open_simulator(SimulatorConfig()) as sim:
        kiosk = Kiosk(
            sim.backend_url, sim.config.kiosk_token, sim.config.agent_id, prefetch=False, heartbeat_interval=60.0
        )
        with trio.fail_after(TIMEOUT):
            async with kiosk.running():
                await trio.sleep(300.5)
                state = (kiosk.provider.healthy, kiosk.provider.heartbeats, kiosk.sender.sent)
    assert state == (True, False, 1)
    assert len([r for r in sim.backend_requests if r.status == 200]) == 6  # health fetches at 0, 60, …, 300 s


def test_heartbeat_payload_carries_version_uptime_and_interval() -> None:
    backend = BackendConfig(url="https://x/signed-url", heartbeat_interval=30.0)
    provider = SignedUrlProvider(backend, NetworkConfig(), "a", "t")
    sender = HeartbeatSender(backend, "t", lambda: {"state": "idle", "counters": {"conversations": 2}}, provider)
    body = sender.payload()
    assert body["state"] == "idle" and body["counters"] == {"conversations": 2}
    assert body["heartbeat_interval"] == 30.0 and body["uptime"] == 0.0 and body["version"]
    assert "t" not in {v for v in body.values() if isinstance(v, str)}  # the token is a header, never the body

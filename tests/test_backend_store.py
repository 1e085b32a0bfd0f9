"""The backend's state stores: the same contract for the in-process store and Redis (a real redis-server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from kioskd.backend.server_config import BackendServerConfig, KioskEntry
from kioskd.backend.store import Admission, MemoryStore, Store, StoreUnavailable, open_store
from redis_server import RedisServer, free_port, running_redis
from test_backend_server import sha

IO_TIMEOUT = 10
TOML_KIOSK = KioskEntry(id="lobby", token_sha256=sha("lobby-token"), agents=["agent_1"])


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def config(redis_url: str = "", **changes: object) -> BackendServerConfig:
    fields: dict[str, object] = dict(rate_per_minute=0.6, burst=3, kiosk=[TOML_KIOSK], redis_url=redis_url)
    fields.update(changes)
    return BackendServerConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis: RedisServer) -> AsyncIterator[Store]:
    redis.flush()
    url = redis.url if request.param == "redis" else ""
    async with open_store(config(url)) as opened:
        yield opened


async def test_bucket_charges_exactly_the_burst_and_refunds(store: Store) -> None:
    with trio.fail_after(IO_TIMEOUT):
        waits = [await store.take("lobby") for _ in range(4)]
        await store.refund("lobby")
        after_refund = await store.take("lobby")
        other = await store.take("cafe")
        for _ in range(5):
            await store.refund("cafe")  # never above the burst
        cafe = [await store.take("cafe") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 90 < waits[3] <= 100  # 0.6 per minute: one token per 100 s
    assert after_refund == 0.0 and other == 0.0
    assert cafe[:3] == [0.0, 0.0, 0.0] and cafe[3] > 0


async def test_heartbeats_keep_the_latest_status_per_kiosk(store: Store) -> None:
    with trio.fail_after(IO_TIMEOUT):
        first = await store.record_heartbeat("lobby", {"state": "idle", "version": "0.1.0"})
        await store.record_heartbeat("cafe", {"state": "offline", "problems": ["mic missing"]})
        second = await store.record_heartbeat("lobby", {"state": "conversation"})
        beats = {hb.kiosk_id: hb for hb in await store.heartbeats()}
    assert set(beats) == {"lobby", "cafe"}
    assert beats["lobby"].status == {"state": "conversation"} and beats["lobby"].last_seen == second >= first
    assert beats["cafe"].status["problems"] == ["mic missing"]


async def test_signed_url_admission_checks_the_agent_before_it_charges(store: Store) -> None:
    hall = KioskEntry(id="hall", token_sha256=sha("hall-token"), agents=["agent_2"])
    with trio.fail_after(IO_TIMEOUT):
        await store.add_kiosk(hall)
        toml = [await store.admit_signed_url(TOML_KIOSK.token_sha256.upper(), "agent_1") for _ in range(4)]
        toml_forbidden = await store.admit_signed_url(TOML_KIOSK.token_sha256, "agent_2")
        first = await store.admit_signed_url(hall.token_sha256, "agent_2")
        forbidden = await store.admit_signed_url(hall.token_sha256, "agent_1")  # nothing charged
        rest = [await store.admit_signed_url(hall.token_sha256, "agent_2") for _ in range(3)]
        unknown = await store.admit_signed_url(sha("nobody"), "agent_1")
        await store.revoke("hall")
        revoked = await store.admit_signed_url(hall.token_sha256, "agent_2")
    assert [a.kiosk for a in toml if a] == [TOML_KIOSK] * 4 and all(a and a.allowed for a in toml)
    assert [a.wait for a in toml if a][:3] == [0.0, 0.0, 0.0] and 90 < toml[3].wait <= 100  # type: ignore[union-attr]
    assert toml_forbidden == Admission(TOML_KIOSK, allowed=False)
    assert first == Admission(hall) and forbidden == Admission(hall, allowed=False)
    assert [a.wait for a in rest if a][:2] == [0.0, 0.0] and rest[2] is not None and rest[2].wait > 90
    assert unknown is None and revoked is None


async def test_heartbeat_admission_records_only_for_a_known_token(store: Store) -> None:
    with trio.fail_after(IO_TIMEOUT):
        admitted = await store.admit_heartbeat(TOML_KIOSK.token_sha256, {"state": "idle", "n": [1, 2]})
        unknown = await store.admit_heartbeat(sha("nobody"), {"state": "idle"})
        beats = await store.heartbeats()
    assert admitted is not None and admitted[0] == TOML_KIOSK and unknown is None
    recorded = [(hb.kiosk_id, hb.status, hb.last_seen) for hb in beats]
    assert recorded == [("lobby", {"state": "idle", "n": [1, 2]}, admitted[1])]


async def test_registry_add_revoke_and_the_toml_list(store: Store) -> None:
    new = KioskEntry(id="cafe", token_sha256=sha("cafe-token"), agents=["agent_2", "agent_3"])
    with trio.fail_after(IO_TIMEOUT):
        assert await store.kiosk_for_token(TOML_KIOSK.token_sha256.upper()) == TOML_KIOSK
        assert await store.kiosk_for_token(new.token_sha256) is None
        await store.add_kiosk(new)
        found = await store.kiosk_for_token(new.token_sha256)
        with pytest.raises(ValueError, match="already exists"):
            await store.add_kiosk(KioskEntry(id="cafe", token_sha256=sha("other"), agents=["a"]))
        with pytest.raises(ValueError, match="already exists"):
            await store.add_kiosk(KioskEntry(id="lobby", token_sha256=sha("other"), agents=["a"]))
        with pytest.raises(ValueError, match="already has that token"):
            await store.add_kiosk(KioskEntry(id="bar", token_sha256=TOML_KIOSK.token_sha256, agents=["a"]))
        assert await store.revoke("cafe") and await store.revoke("lobby")
        assert not await store.revoke("nobody")
        refused = [await store.kiosk_for_token(e.token_sha256) for e in (new, TOML_KIOSK)]
        listed = [(r.entry.id, r.source, r.revoked) for r in await store.kiosks()]
        again = KioskEntry(id="cafe", token_sha256=sha("cafe-token-2"), agents=["agent_2"])
        await store.add_kiosk(again)  # a revoked registry id may be given a new token
        reissued = await store.kiosk_for_token(again.token_sha256)
        old = await store.kiosk_for_token(new.token_sha256)
    assert found == new
    assert refused == [None, None]
    assert listed == [("lobby", "toml", True), ("cafe", "registry", True)]
    assert reissued == again and old is None


async def test_unreachable_redis_fails_closed(tmp_path: Path) -> None:
    with trio.fail_after(IO_TIMEOUT):
        async with open_store(config(f"redis://127.0.0.1:{free_port()}/0")) as store:
            for call in (store.take("lobby"), store.kiosk_for_token(TOML_KIOSK.token_sha256), store.heartbeats()):
                with pytest.raises(StoreUnavailable, match=r"redis at redis://127\.0\.0\.1:\d+/0 failed"):
                    await call


async def test_redis_outage_recovers_by_itself(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        with trio.fail_after(IO_TIMEOUT):
            async with open_store(config(server.url)) as store:
                assert await store.take("lobby") == 0.0
                server.stop()
                with pytest.raises(StoreUnavailable):
                    await store.take("lobby")
                server.start()
                assert await store.take("lobby") == 0.0  # a new, empty Redis: a full bucket
    finally:
        server.stop()


def test_memory_store_bucket_in_virtual_time() -> None:
    now = [100.0]
    store = MemoryStore(config(rate_per_minute=6), clock=lambda: now[0], wall_clock=lambda: 5000.0)

    async def run() -> tuple[list[float], float, float]:
        waits = [await store.take("lobby") for _ in range(4)]
        now[0] = 110.0
        refill = await store.take("lobby")
        seen = await store.record_heartbeat("lobby", {"state": "idle"})
        return waits, refill, seen

    waits, refill, seen = trio.run(run)
    assert waits == [0.0, 0.0, 0.0, pytest.approx(10.0)]
    assert refill == 0.0 and seen == 5000.0

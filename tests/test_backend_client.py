"""SignedUrlProvider and parse_reply: waits after each backend failure, prefetch, freshness (virtual time)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from kiosk_harness import kiosk_config
from kioskd.backend.client import SignedUrlError, SignedUrlProvider, parse_reply
from kioskd.backoff import Backoff
from kioskd.simulator import SimulatorConfig, open_simulator

TIMEOUT = 30


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


@pytest.mark.parametrize(
    ("status", "body", "kind", "retry"),
    [
        (401, b"", "unauthorized", None),
        (403, b"", "forbidden", None),
        (429, b"", "rate_limited", 7.0),
        (500, b"", "server", None),
        (503, b"", "server", 7.0),
        (200, b"<html>", "bad_reply", None),
        (200, b'{"url": "x"}', "bad_reply", None),
        (200, b'{"signed_url": "https://a/b"}', "bad_reply", None),
        (200, b'{"signed_url": "ws://[::1/x"}', "bad_reply", None),
        (200, b'{"signed_url": "ws://h:99999/x"}', "bad_reply", None),
        (200, b'{"signed_url": "ws://h/x y"}', "bad_reply", None),
        (200, b'{"signed_url": "ws:///x"}', "bad_reply", None),
    ],
)
def test_parse_reply_errors(status: int, body: bytes, kind: str, retry: float | None) -> None:
    headers = {"retry-after": "7"} if status in (429, 503) else {}
    with pytest.raises(SignedUrlError) as info:
        parse_reply(status, body, headers)
    assert (info.value.kind, info.value.retry_after) == (kind, retry)


def test_parse_reply_ok() -> None:
    assert parse_reply(200, b'{"signed_url": "wss://h/x?token=t"}', {}) == "wss://h/x?token=t"


async def _provider(sim, tmp_path: Path, **backend: object) -> SignedUrlProvider:  # type: ignore[no-untyped-def]
    config = kiosk_config(sim, tmp_path, backend=dict(backend))
    assert config.backend is not None
    return SignedUrlProvider(
        config.backend, config.network, config.agent.agent_id, config.backend.kiosk_token(),
        backoff=Backoff(config.network.backoff_base, config.network.backoff_cap, rng=random.Random(0)),
    )


@pytest.mark.parametrize("mode", ["500", "503", "garbage", "bad_json", "timeout"])
async def test_provider_retries_with_seeded_backoff(
    tmp_path: Path, virtual_clock: trio.testing.MockClock, mode: str
) -> None:
    expected = Backoff(0.5, 30.0, rng=random.Random(0))
    timeout = 1.0
    async with open_simulator(SimulatorConfig()) as sim:
        sim.backend_faults.set(mode, times=4)
        provider = await _provider(sim, tmp_path, timeout=timeout)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                await nursery.start(provider.run)
                await sim.wait_for(lambda: bool(sim.backend_requests) and sim.backend_requests[-1].status == 200)
                while provider._ready is None:
                    await trio.sleep(0.01)
                assert provider.healthy and provider.last_error == ""
                nursery.cancel_scope.cancel()
        await provider.aclose()
    # each request starts when the one before failed (plus the timeout when the backend hangs) plus the wait
    hang = timeout if mode == "timeout" else 0.0
    due = [start]
    for _ in range(4):
        due.append(due[-1] + hang + expected.next_delay())
    answered = [r.t for r in sim.backend_requests]  # a hung request is never answered, so not recorded
    assert answered == pytest.approx(due[-1:] if mode == "timeout" else due, abs=0.05)


@pytest.mark.parametrize(("mode", "wait"), [("429", 7.0)])
async def test_provider_waits_what_the_backend_asks(
    tmp_path: Path, virtual_clock: trio.testing.MockClock, mode: str, wait: float
) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        sim.backend_faults.set(mode, times=1, retry_after=7)
        provider = await _provider(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(provider.run)
                await sim.wait_for(lambda: len(sim.backend_requests) >= 2)
                assert not provider.healthy or provider._ready is not None
                nursery.cancel_scope.cancel()
        await provider.aclose()
    first, second = sim.backend_requests[:2]
    assert second.t - first.t == pytest.approx(wait, abs=0.05)


async def test_prefetched_url_is_used_once_and_refreshed(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        provider = await _provider(sim, tmp_path, health_interval=10.0, url_max_age=600.0)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(provider.run)
                while provider._ready is None:
                    await trio.sleep(0.01)
                fetches = provider.fetches
                first = await provider.take()  # no round trip
                assert provider.fetches == fetches
                while provider._ready is None:
                    await trio.sleep(0.01)
                second = await provider.take()
                assert second != first  # one URL per conversation
                while provider._ready is None:
                    await trio.sleep(0.01)
                # idle: a health check (which refreshes the URL) every health_interval (10 s here)
                t0 = provider._ready[1]
                sim.backend_faults.set("503")
                while provider.healthy:
                    await trio.sleep(0.01)
                checked = trio.current_time() - t0
                assert provider._ready is not None  # a still-valid URL is kept through an outage
                nursery.cancel_scope.cancel()
        await provider.aclose()
    assert checked == pytest.approx(10.0, abs=0.1)


@pytest.mark.parametrize("token", ["Zq9-line-one\nWv8-line-two", "Zq9\x00Wv8", "Zq9 \r\n Wv8"])
async def test_header_errors_never_carry_the_header_value(tmp_path: Path, token: str) -> None:
    """A token that cannot be a header (one that slipped past the config check) fails without being echoed."""
    import httpx

    from kioskd.backend.client import fetch_signed_url

    async with open_simulator(SimulatorConfig()) as sim, httpx.AsyncClient() as client:
        config = kiosk_config(sim, tmp_path)
        assert config.backend is not None
        with trio.fail_after(TIMEOUT), pytest.raises(SignedUrlError) as info:
            await fetch_signed_url(client, config.backend, config.agent.agent_id, token)
    text = f"{info.value} {info.value!r}"
    assert "Zq9" not in text and "Wv8" not in text, text
    assert info.value.kind == "network"

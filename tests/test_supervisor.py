"""The supervisor's start path in virtual time, against the simulator's real signing backend.

Waits are measured on the kiosk's side, between two moments with no I/O in between: the
board update that announces a wait ("retrying in …", made right before the supervisor
sleeps) and the next request leaving the HTTP client (an httpx request hook). So the
expectations are exact (to float rounding) however slow the loopback is.

Nothing here polls with short sleeps: with ``autojump_threshold=0.01`` every 10 ms of
virtual polling costs 10 ms of real idle time, which is why a 60 s virtual wait used to
take over a minute (the simulator itself never holds the clock back). Tests wait on
events (board listeners, ``sim.wait_for``) instead.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from kiosk_harness import kiosk_config
from kioskd.actions import SessionOutcome
from kioskd.backend.client import UNAUTHORIZED_RETRY, SignedUrlProvider
from kioskd.backoff import Backoff
from kioskd.config import NetworkConfig
from kioskd.service.resume_policy import Next, after_outcome
from kioskd.service.supervisor import START_WINDOW, Supervisor
from kioskd.simulator import Simulator, SimulatorConfig, open_simulator
from kioskd.state import Command, KioskState, Status, StatusBoard
from kioskd.tools import ToolRegistry
from resilience_rig import FakeAudio

#: per test, in virtual seconds (fail_after runs on the MockClock: a hang jumps straight to it)
TIMEOUT = 300
SEED = 1234
SIM = SimulatorConfig(transcripts=("Where is the library?",), reply_seconds=0.2, tool_call=None)
EXACT = 1e-9
NET = NetworkConfig()


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


@dataclass
class StartRig:
    sim: Simulator
    supervisor: Supervisor
    urls: SignedUrlProvider
    board: StatusBoard
    audio: FakeAudio
    #: (trio time, state, reason) of every board change
    states: list[tuple[float, KioskState, str]] = field(default_factory=list)
    #: trio time at which each backend request left the client
    fetches: list[float] = field(default_factory=list)

    async def wait_board(self, predicate: Callable[[Status], bool]) -> float:
        """Trio time at which the board first satisfies ``predicate`` (now, if it already does)."""
        if predicate(self.board.status):
            return trio.current_time()
        seen = trio.Event()
        at: list[float] = []

        def listener(status: Status) -> None:
            if not seen.is_set() and predicate(status):
                at.append(trio.current_time())
                seen.set()

        unlisten = self.board.listen(listener)
        try:
            await seen.wait()
        finally:
            unlisten()
        return at[0]

    def announced_waits(self) -> list[tuple[float, float]]:
        """(time, seconds) of every "retrying in X s" the supervisor showed."""
        out = []
        for t, _, reason in self.states:
            if reason.startswith("retrying in "):
                out.append((t, float(reason.split()[2])))
        return out

    def statuses(self) -> list[int]:
        return [r.status for r in self.sim.backend_requests]


@asynccontextmanager
async def open_start_rig(tmp_path: Path, sim_config: SimulatorConfig = SIM) -> AsyncIterator[StartRig]:
    """Simulator (agent and signing backend), provider and supervisor with a seeded rng.

    The provider's background loop (prefetch and health checks) is deliberately not run:
    its fetches would race the supervisor's for the simulator's one-shot faults. Every
    ``take()`` is therefore a real request to the simulator's backend.
    """
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(open_simulator(sim_config))
        config = kiosk_config(sim, tmp_path)
        assert config.backend is not None
        fetches: list[float] = []

        async def on_request(request: httpx.Request) -> None:
            fetches.append(trio.current_time())

        client = httpx.AsyncClient(follow_redirects=False, event_hooks={"request": [on_request]})
        urls = SignedUrlProvider(config.backend, config.network, config.agent.agent_id, config.backend.kiosk_token(),
                                 client=client)
        stack.push_async_callback(urls.aclose)
        board = StatusBoard()
        audio = FakeAudio()
        supervisor = Supervisor(config, audio, board, urls, ToolRegistry.from_config(config),
                                rng=random.Random(SEED))
        rig = StartRig(sim, supervisor, urls, board, audio, fetches=fetches)
        board.listen(lambda s: rig.states.append((trio.current_time(), s.state, s.reason)))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        await nursery.start(supervisor.run)
        yield rig


def _seeded_waits(n: int) -> list[float]:
    """The first ``n`` waits of the supervisor's start backoff, from the same seed."""
    backoff = Backoff(NET.backoff_base, NET.backoff_cap, rng=random.Random(SEED))
    return [backoff.next_delay() for _ in range(n)]


async def _start_and_wait_for_conversation(rig: StartRig) -> float:
    rig.supervisor.command(Command.START)
    return await rig.wait_board(lambda s: s.state is KioskState.CONVERSATION)


async def _end_and_wait_idle(rig: StartRig) -> None:
    rig.supervisor.command(Command.END)
    await rig.wait_board(lambda s: s.state is KioskState.IDLE)
    await rig.sim.wait_for(lambda: not any(c.open for c in rig.sim.conversations))


# ---------------------------------------------------------------------- waits between tries


async def test_429_retry_after_is_waited_exactly(tmp_path: Path, virtual_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_start_rig(tmp_path) as rig:
            rig.sim.backend_faults.set("429", times=1, retry_after=3)
            await _start_and_wait_for_conversation(rig)
            await _end_and_wait_idle(rig)
    assert rig.statuses() == [429, 200]
    [(announced_at, wait)] = rig.announced_waits()
    assert wait == 3.0
    assert rig.fetches[1] - announced_at == pytest.approx(3.0, abs=EXACT)
    # the simulator saw the same spacing (server side, so loopback latency is in it)
    first, second = rig.sim.backend_requests
    assert second.t - first.t == pytest.approx(3.0, abs=0.05)
    assert len(rig.sim.conversations) == 1
    assert rig.supervisor.counters["failed_starts"] == 0


@pytest.mark.parametrize("mode", ["500", "503", "garbage", "bad_json"])
async def test_server_errors_wait_the_seeded_backoff(
    tmp_path: Path, virtual_clock: trio.testing.MockClock, mode: str
) -> None:
    failures = 4
    with trio.fail_after(TIMEOUT):
        async with open_start_rig(tmp_path) as rig:
            rig.sim.backend_faults.set(mode, times=failures)
            await _start_and_wait_for_conversation(rig)
            await _end_and_wait_idle(rig)
    assert rig.statuses()[-1] == 200 and len(rig.statuses()) == failures + 1
    expected = _seeded_waits(failures)
    announced = rig.announced_waits()
    assert [round(w, 1) for _, w in announced] == [round(w, 1) for w in expected]
    actual = [fetch - at for (at, _), fetch in zip(announced, rig.fetches[1:], strict=True)]
    assert actual == pytest.approx(expected, abs=EXACT)
    assert rig.supervisor.counters["failed_starts"] == 0
    assert rig.board.status.state is KioskState.IDLE


# ---------------------------------------------------------------------- giving up


async def test_401_gives_up_at_once_and_the_next_start_tries_again(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_start_rig(tmp_path) as rig:
            rig.sim.backend_faults.set("401", times=1)
            rig.supervisor.command(Command.START)
            connecting_at = await rig.wait_board(lambda s: s.state is KioskState.CONNECTING)
            error_at = await rig.wait_board(lambda s: s.state is KioskState.ERROR)
            error = rig.board.status
            await trio.sleep(IDLE_GRACE := 5.0)  # nothing retries on its own
            assert rig.statuses() == [401]
            assert rig.board.status.state is KioskState.ERROR
            # the next visitor's start asks again (the token may have been fixed)
            await _start_and_wait_for_conversation(rig)
            await _end_and_wait_idle(rig)
    assert error_at == pytest.approx(connecting_at, abs=EXACT)  # no wait before giving up
    assert "token" in error.reason and "401" in error.reason
    assert rig.announced_waits() == []
    assert rig.statuses() == [401, 200]
    assert rig.supervisor.counters["failed_starts"] == 1
    assert rig.board.status.state is KioskState.IDLE and rig.board.status.reason == ""  # error cleared
    assert IDLE_GRACE < UNAUTHORIZED_RETRY


async def test_gives_up_when_the_next_wait_would_pass_the_start_window(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    retry_after = 6  # tries at 0, 6, 12; the next (18) would be past the 15 s window
    with trio.fail_after(TIMEOUT):
        async with open_start_rig(tmp_path) as rig:
            rig.sim.backend_faults.set("429", retry_after=retry_after)
            rig.supervisor.command(Command.START)
            connecting_at = await rig.wait_board(lambda s: s.state is KioskState.CONNECTING)
            gave_up_at = await rig.wait_board(lambda s: s.state is KioskState.OFFLINE)
            offline = rig.board.status
            await trio.sleep(30)  # and stays put
            assert rig.board.status.state is KioskState.OFFLINE
            assert len(rig.fetches) == 3
            # the backend recovers: the next start works and the light is back to idle
            rig.sim.backend_faults.reset()
            await _start_and_wait_for_conversation(rig)
            await _end_and_wait_idle(rig)
    assert START_WINDOW == 15.0
    assert [t - connecting_at for t in rig.fetches[:3]] == pytest.approx([0.0, 6.0, 12.0], abs=EXACT)
    assert gave_up_at - connecting_at == pytest.approx(12.0, abs=EXACT)  # not after sleeping past the window
    assert offline.reason.startswith("backend unreachable: rate_limited")
    assert rig.supervisor.counters["failed_starts"] == 1
    assert rig.statuses() == [429, 429, 429, 200]
    assert len(rig.sim.conversations) == 1


async def test_refused_agent_connections_back_off_until_the_start_window(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    """The backend answers, but the agent's address refuses connections: seeded backoff, then give up."""
    with trio.fail_after(TIMEOUT):
        async with open_start_rig(tmp_path) as rig:
            with trio.socket.socket() as probe:  # a port that is surely closed: bound, never listening
                await probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
                rig.sim.backend.ws_base = lambda: f"ws://127.0.0.1:{port}"
                rig.supervisor.command(Command.START)
                connecting_at = await rig.wait_board(lambda s: s.state is KioskState.CONNECTING)
                done_at = await rig.wait_board(lambda s: s.state is not KioskState.CONNECTING)
    # the same seeded backoff decides every wait; the start gives up once the next would pass the window
    backoff = Backoff(NET.backoff_base, NET.backoff_cap, rng=random.Random(SEED))
    expected_fetches = [0.0]
    while True:
        wait = backoff.next_delay()
        if expected_fetches[-1] + wait > START_WINDOW:
            break
        expected_fetches.append(expected_fetches[-1] + wait)
    assert [t - connecting_at for t in rig.fetches] == pytest.approx(expected_fetches, abs=EXACT)
    assert done_at - connecting_at == pytest.approx(expected_fetches[-1], abs=EXACT)
    assert rig.board.status.state is KioskState.IDLE  # the backend is fine: idle, with why the start failed
    assert rig.board.status.reason.startswith("last start failed: cannot connect")
    assert rig.supervisor.last_outcome is not None and rig.supervisor.last_outcome.resumable
    assert rig.sim.conversations == []


# ---------------------------------------------------------------------- abandoning a start


@pytest.mark.parametrize("where", ["fetch_in_flight", "waiting_to_retry"])
async def test_end_while_connecting_abandons_the_start(
    tmp_path: Path, virtual_clock: trio.testing.MockClock, where: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_start_rig(tmp_path) as rig:
            if where == "fetch_in_flight":
                rig.sim.backend_faults.set("timeout", times=1)  # the backend hangs
            else:
                rig.sim.backend_faults.set("429", times=1, retry_after=10)
            rig.supervisor.command(Command.START)
            await rig.wait_board(lambda s: s.state is KioskState.CONNECTING)
            await trio.sleep(1.0)  # well inside the hang / the 10 s wait
            assert rig.board.status.state is KioskState.CONNECTING
            rig.supervisor.command(Command.START)  # a second press while connecting changes nothing
            await trio.sleep(0.1)
            ended_at = trio.current_time()
            rig.supervisor.command(Command.END)
            idle_at = await rig.wait_board(lambda s: s.state is not KioskState.CONNECTING)
            if where == "fetch_in_flight":  # the cancelled fetch says nothing about the backend's health
                assert rig.board.status.state is KioskState.IDLE
            else:  # the backend's last answer was a 429 (the provider's health loop is not run here)
                assert rig.board.status.state is KioskState.OFFLINE
                assert rig.board.status.reason.startswith("backend unreachable: rate_limited")
            await trio.sleep(20)  # nothing was left running: no late fetch, no conversation
            assert len(rig.fetches) == 1
            assert rig.sim.conversations == []
            assert not rig.supervisor._in_conversation and rig.supervisor._session is None
            assert all(u.closed for u in rig.audio.uplinks)
            # and the kiosk still works
            await _start_and_wait_for_conversation(rig)
            await _end_and_wait_idle(rig)
    assert idle_at == pytest.approx(ended_at, abs=EXACT)
    assert rig.supervisor.counters["failed_starts"] == 0
    assert rig.supervisor.counters["dropped_commands"] == 0
    assert len(rig.sim.conversations) == 1 and not rig.sim.conversations[0].open
    assert rig.sim.conversations[0].close_code == 1000


# ---------------------------------------------------------------------- the provider's 401 pause


async def test_provider_waits_a_minute_after_a_401(tmp_path: Path, virtual_clock: trio.testing.MockClock) -> None:
    """SignedUrlError.wait → UNAUTHORIZED_RETRY, through the provider's loop and the real backend.

    Waits on the simulator's change signal, not a polling loop, so a minute of virtual
    time costs milliseconds.
    """
    with trio.fail_after(TIMEOUT):
        async with open_simulator(SIM) as sim:
            config = kiosk_config(sim, tmp_path)
            assert config.backend is not None
            sim.backend_faults.set("401", times=1)
            provider = SignedUrlProvider(
                config.backend, config.network, config.agent.agent_id, config.backend.kiosk_token()
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(provider.run)
                await sim.wait_for(lambda: len(sim.backend_requests) >= 1)
                await trio.sleep(1.0)  # the client has read the answer
                assert not provider.healthy and "token" in provider.last_error
                await sim.wait_for(lambda: len(sim.backend_requests) >= 2)
                await trio.sleep(1.0)
                assert provider.healthy and provider._ready is not None
                nursery.cancel_scope.cancel()
            await provider.aclose()
    first, second = sim.backend_requests
    assert (first.status, second.status) == (401, 200)
    assert second.t - first.t == pytest.approx(UNAUTHORIZED_RETRY, abs=0.05)


async def test_provider_without_prefetch_fetches_once_per_take(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    """With prefetch off a take() is the one request a conversation costs: no extra "refill" right after."""
    with trio.fail_after(TIMEOUT):
        async with open_simulator(SIM) as sim:
            config = kiosk_config(sim, tmp_path, backend={"prefetch": False, "health_interval": 60.0})
            assert config.backend is not None
            provider = SignedUrlProvider(
                config.backend, config.network, config.agent.agent_id, config.backend.kiosk_token()
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(provider.run)
                await sim.wait_for(lambda: len(sim.backend_requests) >= 1)  # the first health check
                await trio.sleep(10)
                await provider.take()
                await trio.sleep(10)
                requests = [r.t for r in sim.backend_requests]
                nursery.cancel_scope.cancel()
            await provider.aclose()
    assert requests == pytest.approx([0.0, 10.0], abs=0.05)


# ------------------------------------------------------------------ what next after an outcome (pure)

DROP = SessionOutcome("the connection dropped without a close frame", resumable=True, opened=True)
FAILED_RESUME = SessionOutcome("cannot connect: refused", resumable=True)
AGENT_END = SessionOutcome("the agent ended the conversation", opened=True)
START_FAILED = SessionOutcome("cannot connect: refused", resumable=True)

#: (name, outcome, resuming, grace, now, deadline, expected (step, deadline))
AFTER_TABLE = [
    ("an end the agent chose is final", AGENT_END, False, 30.0, 10.0, 15.0, (Next.END, 15.0)),
    ("a drop resumes, the window counting from the drop", DROP, False, 30.0, 10.0, 15.0, (Next.RESUME, 40.0)),
    ("a drop of a resumed conversation gets a fresh window", DROP, True, 30.0, 50.0, 40.0, (Next.RESUME, 80.0)),
    ("no grace: never resume", DROP, False, 0.0, 10.0, 15.0, (Next.END, 15.0)),
    ("a failed start is not resumed (the start loop retries)", START_FAILED, False, 30.0, 10.0, 15.0,
     (Next.END, 15.0)),
    ("a failed resume attempt goes on within the window", FAILED_RESUME, True, 30.0, 39.9, 40.0,
     (Next.RESUME, 40.0)),
    ("a failed resume attempt at the window's end gives up", FAILED_RESUME, True, 30.0, 40.0, 40.0,
     (Next.GIVE_UP, 40.0)),
    ("a final outcome while resuming ends it", SessionOutcome("rejected", rejected=True), True, 30.0, 20.0, 40.0,
     (Next.END, 40.0)),
]


@pytest.mark.parametrize(("name", "outcome", "resuming", "grace", "now", "deadline", "expected"), AFTER_TABLE,
                         ids=[row[0] for row in AFTER_TABLE])
def test_after_outcome(name: str, outcome: SessionOutcome, resuming: bool, grace: float, now: float,
                       deadline: float, expected: tuple[Next, float]) -> None:
    assert after_outcome(outcome, resuming=resuming, grace=grace, now=now, deadline=deadline) == expected

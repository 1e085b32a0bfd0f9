"""Link faults mid-conversation, over real loopback sockets through FaultProxies, in virtual time.

The clock jumps when every task has waited 10 ms of real time, so loopback traffic takes
(almost) no virtual time and seconds-long outages cost milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from board_wait import wait_for_status
from kioskd.protocol.server_events import AgentResponse, UserTranscript
from kioskd.service.supervisor import RESUME_INTERVAL
from kioskd.simulator import SimulatorConfig
from kioskd.state import Command, KioskState
from resilience_rig import Rig, open_rig

TIMEOUT = 60  # real seconds, per test
STALL_DETECTION = 8.0  # the requirement (network.stall_timeout)
RECOVERY = 1.0  # back within this long of the network's return
TRANSCRIPT = "Where is the library?"
SIM = SimulatorConfig(transcripts=(TRANSCRIPT,), reply_seconds=0.4, tool_call=None)


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


async def _converse(rig: Rig) -> None:
    """Start, and wait until the visitor has spoken and the agent answered."""
    answered = trio.Event()
    heard: list[bool] = []

    def observe(event: object) -> None:  # the agent's answer to the visitor (its greeting comes first)
        if isinstance(event, UserTranscript):
            heard.append(True)
        elif isinstance(event, AgentResponse) and heard:
            answered.set()

    rig.supervisor.observers.append(observe)
    rig.supervisor.command(Command.START)
    await rig.wait_state(KioskState.CONVERSATION)
    await answered.wait()


async def test_drop_mid_conversation_resumes_with_the_transcript(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM) as rig:
            await _converse(rig)
            first = rig.sim.conversations[0]
            dropped_at = trio.current_time()
            assert rig.agent_proxy.drop() == 1
            second = await rig.sim.wait_for_conversation(1)
            back_at = await rig.wait_state(KioskState.CONVERSATION)
            await rig.sim.wait_for(lambda: second.contextual_updates)
    print(f"drop: back after {back_at - dropped_at:.3f} s")
    assert back_at - dropped_at <= RECOVERY
    assert not first.open
    update = second.contextual_updates[0]
    assert f"Visitor: {TRANSCRIPT}" in update and "Agent: Hello!" in update
    assert update.index("Agent: Hi, welcome!") < update.index("Visitor:"), "the greeting, then the exchange"
    assert second.client_data is not None  # a whole new conversation, introduced properly
    assert rig.supervisor.counters["resumed"] == 1
    assert [name for _, name in rig.audio.cues] == ["listening", "reconnecting"]  # no second "listening"
    assert rig.audio.uplinks[0].closed  # outage audio is not replayed
    reconnecting = [reason for _, state, reason in rig.states if state is KioskState.RECONNECTING]
    assert reconnecting and reconnecting[0].startswith("reconnecting: the connection dropped")


@pytest.mark.parametrize("prefetch", [True, False])
async def test_stall_is_detected_and_recovered_when_the_network_returns(
    tmp_path: Path, virtual_clock: trio.testing.MockClock, prefetch: bool
) -> None:
    outage = 12.0
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM, backend={"prefetch": prefetch}) as rig:
            await _converse(rig)
            stalled_at = trio.current_time()
            rig.network(stalled=True)  # bytes vanish: handshakes in flight never complete
            detected_at = await rig.wait_state(KioskState.RECONNECTING)
            reason = rig.board.status.reason
            await trio.sleep_until(stalled_at + outage)
            assert len(rig.sim.conversations) == 1  # nothing got through the dead network
            assert rig.board.status.state is KioskState.RECONNECTING
            returned_at = trio.current_time()
            rig.network(stalled=False)
            back_at = await rig.wait_state(KioskState.CONVERSATION)
            second = await rig.sim.wait_for_conversation(1)
            await rig.sim.wait_for(lambda: second.contextual_updates)
    print(f"stall: detected after {detected_at - stalled_at:.3f} s, back {back_at - returned_at:.3f} s after return")
    assert detected_at - stalled_at <= STALL_DETECTION
    assert reason == "reconnecting: link stalled: nothing heard for 8 s"
    assert back_at - returned_at <= RECOVERY
    assert f"Visitor: {TRANSCRIPT}" in second.contextual_updates[0]
    assert len(rig.sim.conversations) == 2
    # the visitor heard the cue as soon as the stall was found
    assert rig.audio.cues[1] == (pytest.approx(detected_at, abs=0.1), "reconnecting")


async def test_refused_connections_recover_within_a_second(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM) as rig:
            await _converse(rig)
            rig.agent_proxy.down = True
            rig.agent_proxy.drop()
            await rig.wait_state(KioskState.RECONNECTING)
            await trio.sleep(10)
            refused = rig.agent_proxy.stats.refused
            returned_at = trio.current_time()
            rig.agent_proxy.down = False
            back_at = await rig.wait_state(KioskState.CONVERSATION)
    print(f"refused: {refused} attempts in 10 s, back {back_at - returned_at:.3f} s after return")
    assert back_at - returned_at <= RECOVERY
    # fast failures are paced, not a busy loop: at most one per RESUME_INTERVAL
    assert 10 <= refused <= 10 / RESUME_INTERVAL + 1


async def test_outage_longer_than_the_grace_window_ends_the_conversation(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM, conversation={"reconnect_grace": 5.0}) as rig:
            await _converse(rig)
            dropped_at = trio.current_time()
            rig.network(stalled=True)
            rig.agent_proxy.drop()
            await rig.wait_state(KioskState.RECONNECTING)
            idle_at = await wait_for_status(rig.board, lambda s: s.state is not KioskState.RECONNECTING)
            # the backend is behind the dead network too: the light says offline, with why
            with trio.fail_after(1.0):
                await wait_for_status(
                    rig.board,
                    lambda s: s.state is KioskState.OFFLINE and s.reason.startswith("backend unreachable: "),
                )
            reasons = [reason for _, _, reason in rig.states]
    assert 5.0 <= idle_at - dropped_at <= 5.0 + RECOVERY
    assert rig.supervisor.counters["failed_resumes"] == 1
    assert any(r.startswith("gave up reconnecting") for r in reasons)
    assert len(rig.sim.conversations) == 1


@pytest.mark.parametrize(
    ("code", "resumed"),
    [(1000, False), (1001, True), (1002, False), (1008, False), (1011, True), (1012, True),
     (4000, False), (4999, False), (None, True)],
)
async def test_close_codes(
    tmp_path: Path, virtual_clock: trio.testing.MockClock, code: int | None, resumed: bool
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM) as rig:
            await _converse(rig)
            if code is None:
                rig.sim.faults.drop()  # 1006: no close frame
            else:
                rig.sim.faults.close(code)
            if resumed:
                second = await rig.sim.wait_for_conversation(1)
                await rig.sim.wait_for(lambda: second.contextual_updates)
                await rig.wait_state(KioskState.CONVERSATION)
            else:
                await rig.wait_state(KioskState.IDLE)
                await trio.sleep(5)  # nothing reopens it
                assert rig.board.status.state is KioskState.IDLE
    assert len(rig.sim.conversations) == (2 if resumed else 1)
    assert rig.supervisor.last_outcome is not None
    assert rig.supervisor.last_outcome.close_code == (1006 if code is None else code)
    assert rig.supervisor.counters["resumed"] == int(resumed)


async def test_unknown_and_malformed_events_are_survived(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM) as rig:
            await _converse(rig)
            rig.sim.faults.malformed(20, "mixed")
            session = rig.supervisor._session
            assert session is not None
            while session.stats.malformed + session.stats.unknown < 20:
                await trio.sleep(0.1)
            await trio.sleep(3)
            assert rig.board.status.state is KioskState.CONVERSATION
            assert rig.sim.conversations[0].open
    assert len(rig.sim.conversations) == 1


@pytest.mark.parametrize("when", ["resume", "start"])
async def test_a_url_the_dead_service_minted_is_refused_once_then_a_fresh_one_is_used(
    tmp_path: Path, virtual_clock: trio.testing.MockClock, when: str
) -> None:
    """The agent side restarts: every URL it minted before (the prefetched one too) now gets 1008.

    One refusal fetches a fresh URL (within the grace window when resuming), and the state
    goes back to what is true: a conversation, then idle, never a lasting error.
    """
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM) as rig:
            before = 0
            if when == "resume":
                await _converse(rig)
                before = 1
            while rig.urls._ready is None:  # a URL prefetched from the old service
                await trio.sleep(0.01)
            rig.sim.agent.tokens.forget()  # the restarted service knows none of them
            if when == "resume":
                assert rig.agent_proxy.drop() == 1
            else:
                rig.supervisor.command(Command.START)
            fresh = await rig.sim.wait_for_conversation(before)
            await rig.wait_state(KioskState.CONVERSATION)
            await rig.sim.wait_for(lambda: fresh.client_data is not None)
            rig.supervisor.command(Command.END)
            await rig.wait_state(KioskState.IDLE)
            await trio.sleep(1.0)
            final = rig.board.status.state
    assert [reason for _, reason in rig.sim.rejected] == ["unknown token"]
    assert final is KioskState.IDLE
    assert KioskState.ERROR not in [state for _, state, _ in rig.states]
    if when == "resume":
        assert rig.supervisor.counters["resumed"] == 1 and fresh.contextual_updates


async def test_an_auth_error_clears_once_the_backend_gives_urls_again(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    """A 401 (say, a token being rotated) shows error; the next good health check brings idle back
    without waiting for a visitor to start a conversation."""
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM, backend={"prefetch": False, "health_interval": 10.0}) as rig:
            await rig.sim.wait_for(lambda: bool(rig.sim.backend_requests))  # the first health check
            rig.sim.backend_faults.set("401", times=1)
            rig.supervisor.command(Command.START)
            error_at = await rig.wait_state(KioskState.ERROR)
            idle_at = await rig.wait_state(KioskState.IDLE)
    assert [r.status for r in rig.sim.backend_requests] == [200, 401, 200]
    assert idle_at - error_at <= 10.0 + 1.0  # the next health check, plus one idle refresh

"""Soak: 200 conversations back to back with random faults; nothing leaks, nothing is left open.

One supervisor (fake audio) against the simulator through the rig's FaultProxies, in
virtual time. Each conversation draws one fault from a seeded ``random.Random``. After a
warm-up (lazily created pools and caches exist from then on) the process's threads and
file descriptors are counted; after the soak they must be exactly the same, every
conversation the simulator saw must be closed, and one more clean conversation must work.
"""

from __future__ import annotations

import collections
import gc
import os
import random
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from kioskd.simulator import SimulatorConfig
from kioskd.state import Command, KioskState, Status
from resilience_rig import Rig, open_rig

SEED = 20240607
CONVERSATIONS = 200
WARMUP = 6
#: per test, in virtual seconds (fail_after runs on the MockClock; a hang jumps straight to it)
TIMEOUT = 20_000
#: per conversation, virtual seconds: a conversation that never ends fails here, with its number
CONVERSATION_TIMEOUT = 60
#: how long the simulator may take to see the close after the kiosk went idle (session CLOSE_TIMEOUT is 2 s)
CLOSE_SETTLE = 5.0
#: idle time before counting threads and descriptors: > hypercorn's 5 s keep-alive timeout
SETTLE = 8.0
SIM = SimulatorConfig(
    transcripts=("Where is the library?",), reply_seconds=0.2, end_of_speech_ms=200, tool_call=None,
    client_data_wait=0.2,
)
FAULTS = (
    "none", "agent_drop", "close_1011", "close_1002", "close_1008", "malformed",
    "backend_500", "backend_429", "backend_garbage", "stall",
)
IDLE_STATES = (KioskState.IDLE, KioskState.OFFLINE, KioskState.ERROR)
RESUMING = ("agent_drop", "close_1011")


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    # loopback traffic is ready within microseconds, so a short threshold is safe and keeps the soak quick
    return trio.testing.MockClock(autojump_threshold=0.002)


async def _board(rig: Rig, predicate: Callable[[Status], bool]) -> None:
    """Return once the board satisfies ``predicate`` (an event, not a polling loop: polling costs real time)."""
    if predicate(rig.board.status):
        return
    seen = trio.Event()

    def listener(status: Status) -> None:
        if predicate(status):
            seen.set()

    unlisten = rig.board.listen(listener)
    try:
        await seen.wait()
    finally:
        unlisten()


async def _idle(rig: Rig) -> None:
    await _board(rig, lambda s: s.state in IDLE_STATES and not rig.supervisor._in_conversation)
    while rig.supervisor._in_conversation:  # the board may say idle a moment before the supervisor returns
        await trio.sleep(0.05)


async def _closed_on_simulator(rig: Rig) -> list[int]:
    """Indexes of simulator conversations still open after CLOSE_SETTLE."""
    with trio.move_on_after(CLOSE_SETTLE):
        await rig.sim.wait_for(lambda: not any(c.open for c in rig.sim.conversations))
    return [i for i, c in enumerate(rig.sim.conversations) if c.open]


async def _one_conversation(rig: Rig, rng: random.Random, fault: str) -> None:
    """Start, inject ``fault`` at a random moment, end (or let the fault end it), wait for idle."""
    sup, sim = rig.supervisor, rig.sim
    if fault == "backend_500":
        sim.backend_faults.set("500", times=1)
    elif fault == "backend_429":
        sim.backend_faults.set("429", times=1, retry_after=1)
    elif fault == "backend_garbage":
        sim.backend_faults.set("garbage", times=1)
    opened_before = len(sim.conversations)
    sup.command(Command.START)
    await _board(rig, lambda s: s.state is KioskState.CONVERSATION)
    await trio.sleep(rng.uniform(0.1, 1.5))
    ends_itself = False
    if fault == "agent_drop":
        rig.agent_proxy.drop()
    elif fault == "close_1011":
        sim.faults.close(1011)
    elif fault in ("close_1002", "close_1008"):
        sim.faults.close(int(fault[-4:]))
        ends_itself = True
    elif fault == "malformed":
        sim.faults.malformed(rng.randint(1, 8), "mixed")
    elif fault == "stall":
        rig.agent_proxy.stall = True  # briefly: well under the 8 s stall timeout, so nothing is lost
        await trio.sleep(rng.uniform(0.5, 2.0))
        rig.agent_proxy.stall = False
    if fault in RESUMING:
        resumed = sup.counters["resumed"]
        await sim.wait_for(lambda: len(sim.conversations) > opened_before + 1)
        await _board(rig, lambda s: s.state is KioskState.CONVERSATION and sup.counters["resumed"] > resumed)
        await trio.sleep(rng.uniform(0.1, 0.5))
    if not ends_itself:
        assert rig.board.status.state is KioskState.CONVERSATION, (fault, rig.board.status)
        sup.command(Command.END)
    await _idle(rig)


async def _settle() -> tuple[int, int]:
    """Threads and open descriptors once idle connections have timed out and garbage is collected."""
    await trio.sleep(SETTLE)
    gc.collect()
    await trio.sleep(0.5)
    # Trio's idle thread-cache workers ("Trio thread N", e.g. from getaddrinfo) exit after 10 s of
    # wall-clock time, however much virtual time passed: they are a cache, not a leak.
    threads = [t for t in threading.enumerate() if not re.fullmatch(r"Trio thread \d+", t.name)]
    return len(threads), len(os.listdir("/proc/self/fd"))


async def _clean_conversation(rig: Rig) -> None:
    n = len(rig.sim.conversations)
    await _one_conversation(rig, random.Random(0), "none")
    assert len(rig.sim.conversations) == n + 1
    assert rig.sim.conversations[-1].close_code == 1000
    assert rig.board.status.state is KioskState.IDLE


@pytest.mark.slow
async def test_soak_200_conversations_with_random_faults(
    tmp_path: Path, virtual_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(SEED)
    plan = [rng.choice(FAULTS) for _ in range(CONVERSATIONS)]
    faults = collections.Counter(plan)
    assert set(faults) == set(FAULTS)  # the seed exercises every kind
    with trio.fail_after(TIMEOUT):
        async with open_rig(tmp_path, SIM) as rig:
            # warm-up: every kind once-ish, so lazily created pools exist before the baseline
            for fault in ("none", "agent_drop", "backend_500", "close_1002", "stall", "none")[:WARMUP]:
                with trio.fail_after(CONVERSATION_TIMEOUT):
                    await _one_conversation(rig, rng, fault)
            await _clean_conversation(rig)
            threads_before, fds_before = await _settle()
            assert await _closed_on_simulator(rig) == []
            warmup_conversations = len(rig.sim.conversations)
            resumed_before = rig.supervisor.counters["resumed"]
            backend_before = len(rig.sim.backend_requests)

            for i, fault in enumerate(plan):
                with trio.fail_after(CONVERSATION_TIMEOUT):
                    await _one_conversation(rig, rng, fault)
                # the kiosk is idle: the simulator must see every conversation closed
                still_open = await _closed_on_simulator(rig)
                assert still_open == [], f"conversation {i} ({fault}): left open on the simulator: {still_open}"

            await _clean_conversation(rig)
            threads_after, fds_after = await _settle()
            still_open = await _closed_on_simulator(rig)
            status = rig.board.status
            counters = dict(rig.supervisor.counters)
            opened = len(rig.sim.conversations) - warmup_conversations
            backend = collections.Counter(r.status for r in rig.sim.backend_requests[backend_before:])
    resumes = counters["resumed"] - resumed_before
    kinds = " ".join(f"{k}={faults[k]}" for k in FAULTS)
    print(f"\nsoak: {CONVERSATIONS} conversations ({opened} opened on the simulator), faults: {kinds}, "
          f"resumes={resumes}, failed_starts={counters['failed_starts']}, "
          f"failed_resumes={counters['failed_resumes']}, threads {threads_before}->{threads_after}, "
          f"fds {fds_before}->{fds_after}")
    assert still_open == []
    assert status.state is KioskState.IDLE
    assert (threads_after, fds_after) == (threads_before, fds_before)
    # every drop and 1011 was resumed, and nothing else was
    assert resumes == sum(faults[k] for k in RESUMING)
    assert counters["failed_starts"] == 0 and counters["failed_resumes"] == 0
    assert counters["dropped_commands"] == 0
    assert opened == CONVERSATIONS + resumes + 1
    # every backend fault was served to the kiosk (and survived)
    assert backend[500] == faults["backend_500"] and backend[429] == faults["backend_429"]
    assert set(backend) == {200, 500, 429}  # garbage comes with a 200

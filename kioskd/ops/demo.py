"""``kioskd demo``: the whole stack on loopback, no hardware, no account.

Starts the simulator (agent + signing backend) and a kiosk in one process: a
bundled speech WAV is the microphone, the agent's audio is written to a WAV file.
A conversation is started through the control socket, as a touch screen would; the
conversation is printed as it happens; the demo exits 0 after one full exchange.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import trio

from kioskd.config import parse_config
from kioskd.ops.ctl import request
from kioskd.ops.logs import setup_logging
from kioskd.protocol.server_events import (
    AgentResponse,
    ConversationInitiationMetadata,
    Ping,
    ServerEvent,
    UnknownEvent,
    UserTranscript,
)
from kioskd.service.daemon import Kiosk
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.state import KioskState, Status

__all__ = ["main"]

#: What the bundled WAV says (the simulator has no speech recognition: it is told).
VISITOR_SAYS = "Hello! Where can I find the dinosaur exhibition?"
#: The whole demo must finish within this many seconds, or it fails loudly.
DEMO_TIMEOUT = 60.0


def bundled_speech() -> Path:
    """The visitor's speech that ships with kioskd (espeak-ng, 16 kHz mono)."""
    return Path(str(resources.files("kioskd") / "data" / "visitor.wav"))


class _Printer:
    """Prints the conversation for a person watching the demo."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.exchanges = 0  # the agent's answers to the visitor (its greeting comes first)
        self.visitor_spoke = False
        self.audio_seen = False

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] {text}", flush=True)

    def on_status(self, status: Status) -> None:
        if status.state is KioskState.CONVERSATION and status.agent_speaking and self.exchanges:
            self.audio_seen = True

    def on_event(self, event: ServerEvent | UnknownEvent) -> None:
        match event:
            case ConversationInitiationMetadata(conversation_initiation_metadata_event=body):
                self.say(f"conversation {body.conversation_id} open "
                         f"(mic → {body.user_input_audio_format}, agent → {body.agent_output_audio_format})")
            case UserTranscript(user_transcription_event=body):
                self.say(f"visitor: {body.user_transcript}")
                self.visitor_spoke = True
            case AgentResponse(agent_response_event=body):
                self.say(f"agent:   {body.agent_response}")
                self.exchanges += self.visitor_spoke
            case Ping(ping_event=body) if body.rtt_ms() is not None:
                self.say(f"ping answered (round trip {body.rtt_ms():g} ms)")


async def _demo(out_dir: Path, speech: Path, fmt: str) -> int:
    printer = _Printer()
    sim_config = SimulatorConfig(
        input_format=fmt,
        output_format=fmt,
        ping_interval=1.0,
        transcripts=(VISITOR_SAYS,),
        replies=("The dinosaur exhibition is on the first floor, straight up the main stairs.",),
    )
    async with open_simulator(sim_config) as sim:
        with tempfile.TemporaryDirectory(prefix="kioskd-demo-") as tmp:
            token = Path(tmp) / "token"
            token.write_text(sim_config.kiosk_token)
            socket_path = str(Path(tmp) / "control.sock")
            config = parse_config({
                "kiosk": {"id": "demo-kiosk", "location": "your terminal"},
                "agent": {"agent_id": sim_config.agent_id},
                "backend": {"url": sim.backend_url, "token_file": str(token)},
                "audio": {"input": f"wav:{speech}", "output": f"wav:{out_dir / 'agent.wav'}"},
                "trigger": {"mode": "manual"},
                "control": {"socket": socket_path},
                "log": {"level": "warning"},
            })
            printer.say(f"simulator: agent {sim.ws_base}, backend {sim.backend_url}")
            kiosk = Kiosk(config)
            kiosk.supervisor.observers.append(printer.on_event)
            kiosk.board.listen(printer.on_status)
            last_state: list[str] = [""]

            def show_state(status: Status) -> None:
                if status.state != last_state[0]:
                    last_state[0] = status.state
                    printer.say(f"state: {status.state}" + (f" ({status.reason})" if status.reason else ""))

            kiosk.board.listen(show_state)
            async with trio.open_nursery() as nursery:
                await nursery.start(kiosk.run)
                printer.say(f"kioskd ctl start → {await trio.to_thread.run_sync(request, socket_path, 'start')}")
                await sim.wait_for(lambda: printer.exchanges >= 1)
                # let the agent's reply play out into the WAV file
                while not (printer.audio_seen and not kiosk.board.status.agent_speaking):
                    await trio.sleep(0.05)
                status = await trio.to_thread.run_sync(request, socket_path, "status")
                printer.say(f"kioskd ctl status → state={status['state']} conversation_id={status['conversation_id']}")
                printer.say(f"kioskd ctl end → {await trio.to_thread.run_sync(request, socket_path, 'end')}")
                await sim.wait_for(lambda: not sim.conversations[0].open)
                while kiosk.board.status.state is not KioskState.IDLE:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            conv = sim.conversations[0]
            printer.say(f"simulator received {conv.audio_chunks} microphone chunks; closed with code {conv.close_code}")
            printer.say(f"agent audio written to {out_dir / 'agent.wav'}")
    return 0


def main(argv: list[str]) -> int:
    """``kioskd demo [--out DIR] [--input WAV] [--format FMT]``."""
    parser = argparse.ArgumentParser(prog="kioskd demo", description=__doc__)
    parser.add_argument("--out", default="demo-out", help="where agent.wav is written (default ./demo-out)")
    parser.add_argument("--input", default=None, help="microphone WAV (default: the bundled visitor speech)")
    parser.add_argument("--format", default="pcm_16000", help="audio format both ways, e.g. ulaw_8000, pcm_44100")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_logging("warning")
    logging.getLogger("kioskd.simulator").setLevel(logging.ERROR)
    speech = Path(args.input) if args.input else bundled_speech()

    async def bounded() -> int:
        with trio.fail_after(DEMO_TIMEOUT):
            return await _demo(out_dir, speech, args.format)

    try:
        return trio.run(bounded)
    except trio.TooSlowError:
        print(f"kioskd demo: no full exchange within {DEMO_TIMEOUT:g} s", file=sys.stderr)
        return 1

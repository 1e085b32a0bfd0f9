"""The official ``elevenlabs`` Python package's conversation client, on the same simulated devices.

``elevenlabs.conversational_ai.conversation.Conversation`` is used unmodified. Its
``DefaultAudioInterface`` needs PyAudio and a sound card, so :class:`ModelledAudio`
re-implements it line for line on the bench devices (see the package's
``default_audio_interface.py``):

* input: a capture callback every ``INPUT_FRAMES_PER_BUFFER`` = 4000 frames (250 ms),
  passed straight to ``input_callback`` (PortAudio's callback thread → here a thread
  reading the clocked :class:`~benchlib.common.Mic` in 4000-frame blocks);
* output: an unbounded ``queue.Queue``; one thread takes a message's audio
  (``get(timeout=0.25)``) and ``out_stream.write``s it — a blocking PortAudio write on a
  stream opened with ``frames_per_buffer`` = 1000 (62.5 ms), modelled as writes of
  1000-frame periods into a device that holds two periods;
* ``interrupt()`` empties the queue; what is being written and what is in the device
  plays on (no flush, no fade).

Pointing it at the simulator: ``ElevenLabs(base_url=…, api_key=…)``. With
``requires_auth=True`` the client fetches a signed URL from
``{base_url}/v1/convai/conversation/get-signed-url`` (the simulator serves that
endpoint); with ``requires_auth=False`` it connects to ``ws://{base_url host}/v1/convai/conversation?agent_id=…``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from .common import Mic, Speaker

INPUT_FRAMES_PER_BUFFER = 4000  # 250 ms @ 16 kHz, as DefaultAudioInterface
OUTPUT_FRAMES_PER_BUFFER = 1000  # 62.5 ms @ 16 kHz, as DefaultAudioInterface
DEVICE_PERIODS = 2  # periods PortAudio/ALSA keeps queued in the device (a typical minimum)


def available() -> str | None:
    """None if the package imports, else why not."""
    try:
        import elevenlabs.conversational_ai.conversation  # noqa: F401
    except Exception as exc:  # ImportError, or a broken dependency
        return f"the elevenlabs package is not installed ({exc.__class__.__name__}: {exc}); pip install elevenlabs"
    return None


def speaker_for_official(origin: float, seconds: float) -> Speaker:
    return Speaker(origin=origin, seconds=seconds, buffer=DEVICE_PERIODS * OUTPUT_FRAMES_PER_BUFFER)


def make_audio(mic_factory: Callable[[], Mic], speaker: Speaker) -> Any:
    """A ``ModelledAudio`` instance (built lazily so the package is imported only when present)."""
    from elevenlabs.conversational_ai.conversation import AudioInterface

    class ModelledAudio(AudioInterface):
        """DefaultAudioInterface's design on the bench devices (see the module docstring)."""

        def __init__(self) -> None:
            self.mic: Mic | None = None
            self.speaker = speaker
            self.interrupts: list[float] = []

        def start(self, input_callback: Callable[[bytes], None]) -> None:
            self.input_callback = input_callback
            self.output_queue: queue.Queue[bytes] = queue.Queue()
            self.should_stop = threading.Event()
            self.mic = mic_factory()
            self.output_thread = threading.Thread(target=self._output_thread, daemon=True)
            self.input_thread = threading.Thread(target=self._input_thread, daemon=True)
            self.output_thread.start()
            self.input_thread.start()

        def stop(self) -> None:
            self.should_stop.set()
            if threading.current_thread() is not self.output_thread:
                self.output_thread.join()

        def output(self, audio: bytes) -> None:
            self.output_queue.put(audio)

        def interrupt(self) -> None:
            try:
                while True:
                    _ = self.output_queue.get(block=False)
            except queue.Empty:
                pass

        def _output_thread(self) -> None:
            import numpy as np

            while not self.should_stop.is_set():
                try:
                    audio = self.output_queue.get(timeout=0.25)
                except queue.Empty:
                    continue
                samples = np.frombuffer(audio, dtype="<i2")
                # Pa_WriteStream: period by period, blocking while the device buffer is full
                for a in range(0, len(samples), OUTPUT_FRAMES_PER_BUFFER):
                    self.speaker.write(samples[a : a + OUTPUT_FRAMES_PER_BUFFER])

        def _input_thread(self) -> None:
            assert self.mic is not None
            while not self.should_stop.is_set():
                data = self.mic.read(INPUT_FRAMES_PER_BUFFER)
                if self.should_stop.is_set():
                    break
                self.input_callback(data.astype("<i2").tobytes())

    return ModelledAudio()


def make_conversation(base_url: str, api_key: str, agent_id: str, audio: Any, *, requires_auth: bool,
                      on_disconnect: Callable[[Any], None] | None = None) -> Any:
    """An official ``Conversation`` pointed at ``base_url`` (the simulator or the fault proxy)."""
    from elevenlabs.client import ElevenLabs
    from elevenlabs.conversational_ai.conversation import Conversation

    client = ElevenLabs(api_key=api_key, base_url=base_url)
    return Conversation(
        client,
        agent_id,
        requires_auth=requires_auth,
        audio_interface=audio,
        callback_disconnect=on_disconnect,
    )

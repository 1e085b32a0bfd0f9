"""The ports the service drives: what a session and the supervisor need of the audio engine.

:class:`kioskd.audio.engine.AudioEngine` and its uplink/playback objects satisfy them
(mypy checks it where the daemon passes the engine in); tests pass small fakes.
"""

from __future__ import annotations

from typing import Protocol

from kioskd.audio.formats import AudioFormat

__all__ = ["AudioPort", "MicPort", "SpeakerPort", "SupervisedAudio"]


class MicPort(Protocol):
    """Microphone audio for one conversation, encoded for the agent.

    ``speech_at``: when the kiosk's own VAD last heard speech in it (Trio time; None: not
    yet); ``voice_level``: the share of speech in its latest 100 ms (0–1, like a vad_score).
    """

    speech_at: float | None

    @property
    def voice_level(self) -> float:
        """The share of speech in the latest 100 ms (0–1)."""

    def set_format(self, fmt: AudioFormat) -> None:
        """Encode from now on as ``fmt`` (the agent's input format)."""

    async def receive(self) -> bytes:
        """The next message's audio."""

    def close(self) -> None:
        """Stop capturing for this conversation."""


class SpeakerPort(Protocol):
    """Agent audio for one conversation."""

    @property
    def speaking(self) -> bool:
        """Agent audio is audible now."""

    def push(self, event_id: int, data: bytes) -> None:
        """Queue agent audio (dropped if ``event_id`` is below the last interruption's: the JS client's rule)."""

    def interrupt(self, event_id: int) -> None:
        """Barge-in: silence everything older than ``event_id`` (audio with that id still plays)."""

    def close(self) -> None:
        """Stop playing for this conversation."""


class AudioPort(Protocol):
    """What a session needs of the audio engine."""

    mic_enabled: bool

    def open_playback(self, fmt: AudioFormat) -> SpeakerPort:
        """A speaker for agent audio in ``fmt``."""


class SupervisedAudio(AudioPort, Protocol):
    """What the supervisor needs of the audio engine beyond a session's needs."""

    def open_uplink(self) -> MicPort:
        """Start capturing for a conversation (with the pre-roll)."""

    def play_cue(self, name: str) -> float:
        """Play a short sound cue (``listening``, ``end``, ``error``, ``reconnecting``); returns its length in s."""

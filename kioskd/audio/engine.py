"""``AudioEngine``: microphone and speaker for the rest of kioskd (see HACKING.md).

Threads and clocks:

* The capture thread reads device periods and posts them to Trio
  (``run_sync_soon``); everything after that — downmix, resampling to 16 kHz, 10 ms
  framing, echo handling, VAD flags, pre-roll, uplinks, frame listeners — runs on the
  Trio thread. Listener times are ``trio.current_time()``.
* The playback thread pulls device periods from the :class:`JitterBuffer` behind a
  ``threading.Lock`` held only for a copy. The jitter buffer lives on the **monotonic
  clock** (``time.monotonic()``) on both sides: the thread pulls with it, and
  :meth:`Playback.push` / :meth:`Playback.interrupt` pass it too, so its ``now`` values
  are always comparable. The far-end (speaker) signal for the echo canceller is posted
  back to Trio right after each write, so far and near frames reach the canceller in the
  order they passed the devices.
* Device failures arrive as values; each device has its own reopen loop with
  :class:`~kioskd.backoff.Backoff`. :meth:`AudioEngine.run` never ends on a device error.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio
import webrtcvad

from kioskd.audio.devices import (
    CaptureThread,
    DeviceFailed,
    DeviceOpened,
    Direction,
    Pacing,
    PlaybackThread,
    Stream,
    open_stream,
)
from kioskd.audio.formats import FRAME_SAMPLES, INTERNAL_RATE, AudioFormat, Resampler, decode, encode, to_mono
from kioskd.audio.jitter import JitterBuffer
from kioskd.audio.uplink import UplinkBuffer
from kioskd.backoff import Backoff
from kioskd.config import AudioConfig

log = logging.getLogger(__name__)

__all__ = ["AudioEngine", "FrameListener", "Playback", "Uplink"]

FrameListener = Callable[[np.ndarray, float], object]
"""``fn(frame, t)``: a 10 ms int16 frame at 16 kHz and its ``trio.current_time()``."""

FRAME_MS = 10
"""Length of one internal frame."""
DEFAULT_FORMAT = AudioFormat("pcm", INTERNAL_RATE)
"""An uplink's format until the conversation says otherwise (the protocol's default)."""
VAD_AGGRESSIVENESS = 2
"""webrtcvad mode for the uplink's speech flags (0 least, 3 most aggressive)."""
VOICE_WINDOW_FRAMES = 10
"""Frames (10 ms each) the uplink's ``voice_level`` averages: 100 ms, the window of the
simulator's vad_score, so the light moves the same with or without the agent's VAD."""
DEVICE_BACKOFF_BASE = 0.5
"""First reopen waits up to this long (seconds)."""
DEVICE_BACKOFF_CAP = 10.0
"""Reopen waits never exceed this (seconds)."""
STABLE_SECONDS = 5.0
"""A device that ran this long before failing reopens with the shortest backoff."""
HALF_DUPLEX_TAIL_S = 0.3
"""In half-duplex mode the mic stays muted this long after the speaker falls silent."""
PLAYBACK_FLUSH_IDLE_S = 0.04
"""Agent audio idle this long: flush the resampler's held-back tail (its filter delay, 3–6 ms)."""
PLAYBACK_FLUSH_CHECK_S = 0.01
"""How often the engine looks for a playback resampler to flush."""
DEVICE_LATENCY_PERIODS = 2
"""Periods of audio assumed still in the device after a write (for ``speaking``)."""
IDLE_CAPTURE_PERIODS = 3
"""While no uplink is open and no frame listener is added (and no echo canceller runs),
the microphone is read in blocks of this many 10 ms periods: the frames only feed the
pre-roll, so a third of the wake-ups and hand-offs do."""


@dataclass
class _Device:
    """What the engine knows about one direction's device (for status and the loops)."""

    name: str
    ok: bool = False
    rate: int = 0
    channels: int = 0
    error: str | None = None
    failures: int = 0


class Uplink:
    """Microphone audio for one conversation: pre-roll first, then live frames.

    Messages are ``chunk_ms`` long, coalesced up to ``max_message_ms`` when the consumer
    falls behind; the capture side never waits (the buffer drops the oldest audio beyond
    ``max_backlog_ms``). Create with :meth:`AudioEngine.open_uplink`.
    """

    def __init__(self, engine: AudioEngine, fmt: AudioFormat, preroll: list[tuple[np.ndarray, bool]]) -> None:
        """Start with ``preroll`` frames already queued."""
        c = engine.config
        self.format = fmt
        self._sent = False
        self._engine = engine
        self._buffer = UplinkBuffer(
            frame_ms=FRAME_MS,
            chunk_ms=c.chunk_ms,
            max_message_ms=c.max_message_ms,
            max_backlog_ms=c.max_backlog_ms,
            rate=INTERNAL_RATE,
        )
        self._resampler = Resampler(INTERNAL_RATE, fmt.rate)
        self._wake = trio.Event()
        self.closed = False
        #: when this uplink last carried speech (Trio time), and the speech flags of its latest frames
        self.speech_at: float | None = None
        self._speech: deque[bool] = deque(maxlen=VOICE_WINDOW_FRAMES)
        for frame, speech in preroll:
            self._buffer.push(frame, speech)

    def set_format(self, fmt: AudioFormat) -> None:
        """Encode in ``fmt`` from now on (the conversation's format is known only once it opens).

        The uplink is opened at the trigger, so nothing said while connecting is lost;
        the audio queued so far is still 16 kHz and is encoded when received.
        """
        if fmt != self.format:
            if self._sent:
                raise RuntimeError("an uplink's format cannot change once audio was sent")
            self.format = fmt
            self._resampler = Resampler(INTERNAL_RATE, fmt.rate)

    def push(self, frame: np.ndarray, speech: bool) -> None:
        """Queue one 16 kHz frame (called by the engine on the Trio thread; never waits)."""
        if not self.closed:
            self._buffer.push(frame, speech)
            self._wake.set()
            self._speech.append(speech)
            if speech:
                self.speech_at = trio.current_time()

    @property
    def voice_level(self) -> float:
        """The share of speech frames in the latest :data:`VOICE_WINDOW_FRAMES` (0–1, as a vad_score)."""
        return sum(self._speech) / len(self._speech) if self._speech else 0.0

    async def receive(self) -> bytes:
        """The next message's audio, encoded in :attr:`format`; ClosedResourceError once closed."""
        while True:
            if self.closed:
                raise trio.ClosedResourceError("uplink is closed")
            samples = self._buffer.take()
            if samples is not None:
                out = self._resampler.process(samples)
                if len(out):
                    self._sent = True
                    return encode(out, self.format)
                continue  # the resampler is still filling: wait for more
            self._wake = trio.Event()
            await self._wake.wait()

    def stats(self) -> dict[str, Any]:
        """The uplink buffer's counters (backlog, drops, …)."""
        return dict(self._buffer.stats())

    def close(self) -> None:
        """Stop receiving frames; a waiting :meth:`receive` raises ClosedResourceError."""
        if not self.closed:
            self.closed = True
            self._wake.set()
            self._engine._uplinks.discard(self)
            self._engine._update_capture_block()


class Playback:
    """Agent audio for one conversation, in ``fmt``, into the engine's jitter buffer."""

    def __init__(self, engine: AudioEngine, fmt: AudioFormat) -> None:
        """Create with :meth:`AudioEngine.open_playback`."""
        self.format = fmt
        self._engine = engine
        self._resampler: Resampler | None = None
        self.closed = False
        self.dropped_bytes = 0
        self._last_push: float | None = None  # trio time; None: nothing held in the resampler
        self._last_event = 0

    def push(self, event_id: int, data: bytes) -> None:
        """Queue agent audio (dropped if ``event_id`` < the last interruption's, or no speaker)."""
        engine = self._engine
        if self.closed or not engine._devices["output"].ok:
            self.dropped_bytes += len(data)
            return
        rate = engine._play_rate
        if self._resampler is None or self._resampler.out_rate != rate:
            self._resampler = Resampler(self.format.rate, rate)
        samples = self._resampler.process(decode(data, self.format))
        self._last_event = event_id
        self._last_push = None if self._resampler.identity else trio.current_time()
        if self._last_push is not None:
            engine._flush_wanted.set()
        with engine._lock:
            engine._jitter.push(event_id, samples, time.monotonic())

    def flush_if_idle(self, now: float) -> None:
        """After :data:`PLAYBACK_FLUSH_IDLE_S` without audio, play the resampler's tail.

        A streaming resampler keeps the end of a reply until more input arrives; without
        this the last ~50 ms of every reply would wait for the next one.
        """
        if self._last_push is None or now - self._last_push < PLAYBACK_FLUSH_IDLE_S or self._resampler is None:
            return
        self._last_push = None
        tail = self._resampler.process(np.zeros(0, dtype=np.int16), last=True)
        if len(tail) and not self.closed:
            with self._engine._lock:
                self._engine._jitter.push(self._last_event, tail, time.monotonic())

    def interrupt(self, event_id: int) -> None:
        """Barge-in: drop audio with id < ``event_id``, queued, in flight or late (short fade)."""
        if self.closed:
            return
        self._resampler = None  # the old stream's tail must not leak into the next reply
        self._last_push = None
        with self._engine._lock:
            self._engine._jitter.interrupt(event_id, time.monotonic())
            self._engine._audible_until = 0.0

    @property
    def speaking(self) -> bool:
        """True while agent audio is audible: queued, or still in the device."""
        return not self.closed and self._engine.speaking

    def close(self) -> None:
        """Stop: queued audio is discarded."""
        if not self.closed:
            self.closed = True
            if self._engine._playback is self:
                self._engine._playback = None
                with self._engine._lock:
                    self._engine._jitter.reset()


class AudioEngine:
    """Microphone and speaker with reopen-on-failure; see the module docstring."""

    def __init__(
        self,
        config: AudioConfig,
        *,
        backoff_base: float = DEVICE_BACKOFF_BASE,
        backoff_cap: float = DEVICE_BACKOFF_CAP,
        pacing: Pacing = "auto",
        opener: Callable[[str, Direction, int, int], Stream] = open_stream,
    ) -> None:
        """Prepare (devices open in :meth:`run`). ``pacing``/``opener`` are for tests and tools."""
        self.config = config
        self.mic_enabled = True
        """False: silence replaces the microphone (push-to-talk released, half duplex)."""
        self.volume = config.volume
        """Speaker volume 0.0–1.0 for everything played (agent and sounds); may change at any time."""
        self.muted = False
        """True: the speaker plays silence (the agent's audio is still received and timed)."""
        self.cues: dict[str, np.ndarray] = {}
        """Cue name → 16 kHz samples for :meth:`play_cue` (a missing name is a cue turned off)."""
        self._backoff = (backoff_base, backoff_cap)
        self._pacing: Pacing = pacing
        self._opener = opener
        self._devices: dict[Direction, _Device] = {"input": _Device(config.input), "output": _Device(config.output)}
        self._last_error: str | None = None
        self._listeners: list[FrameListener] = []
        self._uplinks: set[Uplink] = set()
        self._preroll: deque[tuple[np.ndarray, bool | None]] = deque(maxlen=config.preroll_ms // FRAME_MS)
        self._vad = webrtcvad.Vad(VAD_AGGRESSIVENESS)
        self._echo: Any = None
        if config.echo == "aec":
            from kioskd.audio.echo import EchoCanceller  # late: only AEC needs pywebrtc-audio

            self._echo = EchoCanceller(rate=INTERNAL_RATE, enabled=True)
        self._cap_conv = _ToFrames()
        self._far_conv = _ToFrames()
        # shared with the playback thread, under _lock:
        self._lock = threading.Lock()
        self._play_rate = config.output_rate or INTERNAL_RATE
        self._jitter = self._new_jitter(self._play_rate)
        self._audible_until = 0.0  # monotonic
        self._playback: Playback | None = None
        self._sound = np.zeros(0, dtype=np.int16)  # a local sound being mixed in (device rate), under _lock
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._capture: CaptureThread | None = None
        self._flush_wanted = trio.Event()

    # ------------------------------------------------------------------ public API

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open both devices and keep them open; started after the first attempt of each."""
        self._trio_token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._device_loop, "input")
            await nursery.start(self._device_loop, "output")
            nursery.start_soon(self._flush_playback)
            task_status.started()

    def add_frame_listener(self, fn: FrameListener) -> None:
        """Call ``fn(frame, t)`` on the Trio thread for every 10 ms microphone frame."""
        self._listeners.append(fn)
        self._update_capture_block()

    def remove_frame_listener(self, fn: FrameListener) -> None:
        """Stop calling ``fn`` (no error if it was not added)."""
        if fn in self._listeners:
            self._listeners.remove(fn)
        self._update_capture_block()

    def open_uplink(self, fmt: AudioFormat = DEFAULT_FORMAT) -> Uplink:
        """Microphone audio in ``fmt``, starting with the last ``preroll_ms`` of frames."""
        self._classify_preroll()
        uplink = Uplink(self, fmt, list(self._preroll))  # type: ignore[arg-type]
        self._uplinks.add(uplink)
        self._update_capture_block()
        return uplink

    def _classify_preroll(self) -> None:
        """Speech flags for pre-roll frames captured while no uplink was open (in order)."""
        if any(speech is None for _, speech in self._preroll):
            self._preroll = deque(
                ((f, self._is_speech(f) if speech is None else speech) for f, speech in self._preroll),
                maxlen=self._preroll.maxlen,
            )

    def _is_speech(self, frame: np.ndarray) -> bool:
        return bool(self._vad.is_speech(frame.tobytes(), INTERNAL_RATE))

    def _update_capture_block(self) -> None:
        """Long microphone reads only while nothing needs the frames at once."""
        idle = not self._uplinks and not self._listeners and self._echo is None
        if self._capture is not None:
            self._capture.block_periods = IDLE_CAPTURE_PERIODS if idle else 1

    def open_playback(self, fmt: AudioFormat) -> Playback:
        """A new playback (agent audio in ``fmt``); closes the previous one."""
        if self._playback is not None:
            self._playback.close()
        with self._lock:
            self._jitter.reset()
        self._playback = Playback(self, fmt)
        return self._playback

    def play_cue(self, name: str) -> float:
        """Play cue ``name`` from :attr:`cues` (nothing if it is turned off); returns its length in seconds."""
        samples = self.cues.get(name)
        return 0.0 if samples is None else self.play_sound(samples)

    def play_sound(self, samples: np.ndarray, rate: int = INTERNAL_RATE) -> float:
        """Mix int16 mono ``samples`` into the speaker, on top of any agent audio; returns seconds.

        The sound takes the agent's path from the jitter buffer on (volume, mute, the echo
        canceller's far end), so the canceller knows it; a new sound replaces one still playing.
        """
        if not self._devices["output"].ok:
            return 0.0
        with self._lock:
            out_rate = self._play_rate
        mono = Resampler(rate, out_rate).process(samples, last=True) if rate != out_rate else samples
        with self._lock:
            self._sound = np.asarray(mono, dtype=np.int16)
        return len(samples) / rate

    @property
    def speaking(self) -> bool:
        """True while speaker audio is queued or still in the device."""
        with self._lock:
            return self._jitter.playing or len(self._sound) > 0 or time.monotonic() < self._audible_until

    def status(self) -> dict[str, Any]:
        """Devices, errors, uplink and jitter counters (JSON-friendly)."""
        i, o = self._devices["input"], self._devices["output"]
        with self._lock:
            jitter = dict(self._jitter.stats())
        uplinks = [u.stats() for u in self._uplinks]
        return {
            "input_device": i.name,
            "output_device": o.name,
            "input_ok": i.ok,
            "output_ok": o.ok,
            "input_format": f"{i.rate}Hz x{i.channels}" if i.ok else None,
            "output_format": f"{o.rate}Hz x{o.channels}" if o.ok else None,
            "input_failures": i.failures,
            "output_failures": o.failures,
            "last_device_error": self._last_error,
            "input_error": None if i.ok else i.error,
            "output_error": None if o.ok else o.error,
            "mic_enabled": self.mic_enabled,
            "echo": self.config.echo,
            "speaking": self.speaking,
            "uplink": uplinks[0] if len(uplinks) == 1 else {"open": len(uplinks), "each": uplinks},
            "jitter": jitter,
            "playback_dropped_bytes": self._playback.dropped_bytes if self._playback else 0,
        }

    # ------------------------------------------------------------------ devices

    def _new_jitter(self, rate: int) -> JitterBuffer:
        c = self.config
        return JitterBuffer(
            rate, min_ms=c.jitter_min_ms, max_ms=c.jitter_max_ms, start_ms=c.jitter_start_ms, fade_ms=c.fade_ms
        )

    async def _device_loop(self, direction: Direction, *, task_status: trio.TaskStatus[None]) -> None:
        """Open, wait for failure, back off, reopen — forever."""
        dev = self._devices[direction]
        backoff = Backoff(*self._backoff)
        started = False
        while True:
            send, recv = trio.open_memory_channel[DeviceOpened | DeviceFailed](math.inf)
            thread = self._make_thread(direction, lambda ev: _send(send, ev))
            opened_at: float | None = None
            try:
                thread.start()
                async for event in recv:
                    if isinstance(event, DeviceOpened):
                        opened_at = trio.current_time()
                        self._on_opened(dev, event)
                    else:
                        self._on_failed(dev, event)
                        break
                    if not started:
                        started = True
                        task_status.started()
            finally:
                thread.stop()
                with trio.CancelScope(shield=True):
                    if not await trio.to_thread.run_sync(thread.join):
                        log.error("audio thread did not stop direction=%s device=%s", direction, dev.name)
            if not started:
                started = True
                task_status.started()
            if opened_at is not None and trio.current_time() - opened_at >= STABLE_SECONDS:
                backoff.reset()
            await trio.sleep(backoff.next_delay())

    async def _flush_playback(self) -> None:
        """Release held-back resampler tails of idle playback (see :meth:`Playback.flush_if_idle`).

        Sleeps until a push leaves a tail held back, then checks every
        :data:`PLAYBACK_FLUSH_CHECK_S` until it is played (no wake-ups while idle).
        """
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted = trio.Event()
            while self._playback is not None and self._playback._last_push is not None:
                await trio.sleep(PLAYBACK_FLUSH_CHECK_S)
                if self._playback is not None:
                    self._playback.flush_if_idle(trio.current_time())

    def _make_thread(self, direction: Direction, on_event: Callable[[Any], object]) -> CaptureThread | PlaybackThread:
        assert self._trio_token is not None
        c = self.config
        common: dict[str, Any] = dict(pacing=self._pacing, opener=self._opener)
        if direction == "input":
            self._capture = CaptureThread(
                c.input, c.input_rate, FRAME_MS, self._trio_token, on_event, on_data=self._on_capture, **common
            )
            self._update_capture_block()
            return self._capture
        return PlaybackThread(
            c.output, c.output_rate, c.device_period_ms, self._trio_token, on_event, source=self._source, **common
        )

    def _on_opened(self, dev: _Device, event: DeviceOpened) -> None:
        if event.direction == "output":
            with self._lock:  # before ``ok``: pushes from now on use the device's rate
                if self._jitter.rate != event.rate:
                    self._jitter = self._new_jitter(event.rate)
                    self._play_rate = event.rate
        dev.ok, dev.rate, dev.channels = True, event.rate, event.channels
        log.info(
            "audio device opened direction=%s device=%r rate=%d channels=%d",
            event.direction, event.name, event.rate, event.channels,
        )  # fmt: skip

    def _on_failed(self, dev: _Device, event: DeviceFailed) -> None:
        dev.ok = False
        dev.failures += 1
        dev.error = event.message  # names the device already
        self._last_error = f"{event.direction} {event.name!r}: {event.message}"
        log.warning("audio device failed direction=%s device=%r error=%r", event.direction, event.name, event.message)
        if event.direction == "output":
            with self._lock:
                self._jitter.reset()
                self._audible_until = 0.0

    # ------------------------------------------------------------------ capture (Trio thread)

    def _on_capture(self, data: np.ndarray, rate: int, channels: int) -> None:
        """Device samples → 16 kHz frames → echo/mute → VAD → pre-roll, uplinks, listeners."""
        try:
            mono = to_mono(data, channels) if channels > 1 else data
            frames = self._cap_conv.feed(mono, rate)
            now = trio.current_time()
            for frame in frames:
                self._on_frame(frame, now)
        except Exception:
            log.exception("audio capture processing failed")

    def _on_frame(self, frame: np.ndarray, now: float) -> None:
        if self._echo is not None:
            frame = np.asarray(self._echo.near(frame), dtype=np.int16)
        elif self.config.echo == "half_duplex" and self._half_duplex_muted():
            frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if not self.mic_enabled:
            frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if self._uplinks:
            speech: bool | None = self._is_speech(frame)
            self._preroll.append((frame, speech))
            for uplink in list(self._uplinks):
                uplink.push(frame, speech)  # type: ignore[arg-type]
        else:  # nobody needs the flag now: classified if an uplink opens (_classify_preroll)
            self._preroll.append((frame, None))
        for fn in list(self._listeners):
            try:
                fn(frame, now)
            except Exception:
                log.exception("audio frame listener failed listener=%r", fn)

    def _half_duplex_muted(self) -> bool:
        with self._lock:
            return self._jitter.playing or time.monotonic() < self._audible_until + HALF_DUPLEX_TAIL_S

    # ------------------------------------------------------------------ playback (device thread)

    def _source(self, frames: int, rate: int, channels: int) -> np.ndarray:
        """Called in the playback thread: the next device period, interleaved."""
        now = time.monotonic()
        with self._lock:
            if self._jitter.rate != rate:
                self._jitter = self._new_jitter(rate)
                self._play_rate = rate
            audible = self._jitter.playing or len(self._sound) > 0
            mono = self._jitter.pull(frames, now)
            if len(self._sound):
                part, self._sound = self._sound[:frames], self._sound[frames:]
                mixed = mono.astype(np.int32)
                mixed[: len(part)] += part
                mono = np.clip(mixed, -32768, 32767).astype(np.int16)
            if audible:
                self._audible_until = now + (DEVICE_LATENCY_PERIODS + 1) * frames / rate
        gain = 0.0 if self.muted else self.volume
        if gain != 1.0:
            mono = np.round(mono * gain).astype(np.int16)
        if self._echo is not None and self._trio_token is not None:
            try:
                self._trio_token.run_sync_soon(self._on_far, mono, rate)
            except trio.RunFinishedError:
                pass
        return np.repeat(mono, channels) if channels > 1 else mono

    def _on_far(self, mono: np.ndarray, rate: int) -> None:
        """Speaker samples (as written) → 16 kHz frames → echo canceller far end."""
        try:
            for frame in self._far_conv.feed(mono, rate):
                self._echo.far(frame)
        except Exception:
            log.exception("audio far-end processing failed")


class _ToFrames:
    """Mono int16 at any rate → whole 16 kHz 10 ms frames (streaming; rebuilt on a rate change)."""

    def __init__(self) -> None:
        self._resampler: Resampler | None = None
        self._rest = np.zeros(0, dtype=np.int16)

    def feed(self, mono: np.ndarray, rate: int) -> list[np.ndarray]:
        """The whole frames now available; the remainder waits for the next call."""
        if self._resampler is None or self._resampler.in_rate != rate:
            self._resampler = Resampler(rate, INTERNAL_RATE)
            self._rest = np.zeros(0, dtype=np.int16)
        pcm = np.concatenate([self._rest, self._resampler.process(mono)])
        whole = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
        self._rest = pcm[whole:]
        return [pcm[i : i + FRAME_SAMPLES] for i in range(0, whole, FRAME_SAMPLES)]


def _send(channel: trio.MemorySendChannel[Any], event: object) -> None:
    """Deliver a device event unless its loop is gone (never raise into Trio's run loop)."""
    try:
        channel.send_nowait(event)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass

"""``AudioEngine``: microphone and speaker for the rest of kioskd (see HACKING.md).

Threads and clocks:

* The capture thread reads device blocks. While nothing needs microphone frames (no
  uplink, no frame listener, the mic not muted, no echo to handle) it hands nothing to
  Trio: it keeps the pre-roll itself, in a ring of raw device samples. Once something
  listens the engine takes that ring (the continuation is exact) and the thread posts
  every block (``run_sync_soon``, one per block: 20 ms while an uplink is open, 50 ms
  otherwise). Downmix, resampling to 16 kHz, 10 ms framing, echo handling, the
  processed pre-roll, uplinks and frame listeners then run on the Trio thread, a block
  at a time. Listener times are ``trio.current_time()`` (earlier frames of a block
  10 ms apart).
* The speaker path is one lock-owning :class:`~kioskd.audio.speaker.Speaker` (jitter
  buffer on the monotonic clock, device rate, audible-until, far-end periods) shared by
  :class:`Playback` and the playback thread. An idle speaker pauses its device. The
  far-end periods the thread wrote are taken by the capture side when it processes
  the next block, so far and near frames reach the canceller in the order they passed
  the devices, without a hand-off per period.
* Device failures arrive as values; each device has its own reopen loop
  (:class:`~kioskd.audio.device_loop.DeviceLoop`, with backoff). :meth:`AudioEngine.run`
  never ends on a device error. Blocks become 10 ms frames in :mod:`kioskd.audio.frames`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import trio

from kioskd.audio.device_loop import DEVICE_BACKOFF_BASE, DEVICE_BACKOFF_CAP, DeviceLoop
from kioskd.audio.device_threads import CaptureThread, Listening, PlaybackThread
from kioskd.audio.devices import DeviceFailed, DeviceOpened, Direction, Stream, open_stream
from kioskd.audio.formats import FRAME_SAMPLES, INTERNAL_RATE, AudioFormat, Resampler, to_mono
from kioskd.audio.frames import FrameListener, Framer, deliver
from kioskd.audio.jitter import JitterBuffer
from kioskd.audio.ring import SampleRing
from kioskd.audio.speaker import Speaker
from kioskd.audio.streams import FRAME_MS, Playback, Uplink
from kioskd.config import AudioConfig

log = logging.getLogger(__name__)

__all__ = ["AudioEngine"]

DEFAULT_FORMAT = AudioFormat("pcm", INTERNAL_RATE)
"""An uplink's format until the conversation says otherwise (the protocol's default)."""
HALF_DUPLEX_TAIL_S = 0.3
"""In half-duplex mode the mic stays muted this long after the speaker falls silent."""
IDLE_CAPTURE_PERIODS = 5
"""Microphone reads are this many 10 ms periods long while no uplink is open but frames
go to listeners such as the voice wake (a few tens of milliseconds do not hurt it). An
open uplink reads ``chunk_ms`` blocks instead, one uplink message each (no latency added:
a message waits for its last sample either way)."""
GATED_CAPTURE_PERIODS = 10
"""Reads while only gated listeners (the voice wake) take frames: the blocks feed the
thread's pre-roll ring and the level gate; a voice wake hears a loud block 100 ms late at
most, well inside the pre-roll."""
QUIET_CAPTURE_PERIODS = 20
"""Reads while nothing takes frames (button or manual trigger, idle): the blocks only feed
the pre-roll ring, so they can be longer (fewer wake-ups of the capture thread). An uplink
opening meanwhile sends the pre-roll at once and gets the rest of the block read in
progress when it ends: at most 200 ms later, once per conversation, nothing lost."""


class AudioEngine:
    """Microphone and speaker with reopen-on-failure; see the module docstring."""

    def __init__(
        self,
        config: AudioConfig,
        *,
        backoff_base: float = DEVICE_BACKOFF_BASE,
        backoff_cap: float = DEVICE_BACKOFF_CAP,
        opener: Callable[[str, Direction, int, int], Stream] = open_stream,
    ) -> None:
        """Prepare (devices open in :meth:`run`). ``opener`` is for tests and tools."""
        self.config = config
        self._mic_enabled = True
        self.cues: dict[str, np.ndarray] = {}
        """Cue name → 16 kHz samples for :meth:`play_cue` (a missing name is a cue turned off)."""
        self._opener = opener
        backoff = (backoff_base, backoff_cap)
        self._devices: dict[Direction, DeviceLoop] = {
            "input": self._device_loop("input", config.input, backoff),
            "output": self._device_loop("output", config.output, backoff),
        }
        self._last_error: str | None = None
        self._listeners: list[FrameListener] = []
        self._gated: dict[FrameListener, float] = {}  # listener → min_dbfs (see add_frame_listener)
        self._gate_frames = Framer()
        self._gate_next = -1  # the first frame of the block that would continue the last loud one
        self._uplinks: set[Uplink] = set()
        self._preroll = SampleRing(config.preroll_ms // FRAME_MS * FRAME_SAMPLES)
        self._echo: Any = None
        if config.echo == "aec":
            from kioskd.audio.echo import EchoCanceller  # late: only AEC needs it

            self._echo = EchoCanceller(rate=INTERNAL_RATE, enabled=True)
        self._echo_quiet_s = config.preroll_ms / 1000 + HALF_DUPLEX_TAIL_S
        self._cap_frames = Framer()
        self._far_frames = Framer()
        self._speaker = Speaker(
            self._new_jitter, config.output_rate or INTERNAL_RATE, volume=config.volume, keep_far=self._echo is not None
        )
        self._playback: Playback | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._capture: CaptureThread | None = None
        self._hot = False  # the capture thread hands blocks to Trio
        self._epoch: int | None = None  # which thread's listening period the blocks must belong to
        self._tail_wanted = trio.Event()

    # ------------------------------------------------------------------ public API

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open both devices and keep them open; started after the first attempt of each."""
        self._trio_token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._devices["input"].run)
            await nursery.start(self._devices["output"].run)
            nursery.start_soon(self._flush_tails)
            task_status.started()

    @property
    def mic_enabled(self) -> bool:
        """False: silence replaces the microphone (push-to-talk released, half duplex)."""
        return self._mic_enabled

    @mic_enabled.setter
    def mic_enabled(self, on: bool) -> None:
        self._mic_enabled = on
        self._update_mode()

    def add_frame_listener(self, fn: FrameListener, *, min_dbfs: float | None = None) -> None:
        """Call ``fn(frame, t)`` on the Trio thread for every 10 ms microphone frame.

        ``min_dbfs``: ``fn`` ignores frames quieter than this (RMS), so they need not be
        delivered. While nothing else needs frames the capture thread then hands over only
        blocks with a frame about that loud (a quiet room costs no hand-off at all); frames
        flow whole while the speaker is or was just audible, so ``fn`` sees it stop.
        """
        if min_dbfs is None:
            self._listeners.append(fn)
        else:
            self._gated[fn] = min_dbfs
        self._update_mode()

    def remove_frame_listener(self, fn: FrameListener) -> None:
        """Stop calling ``fn`` (no error if it was not added)."""
        if fn in self._listeners:
            self._listeners.remove(fn)
        self._gated.pop(fn, None)
        self._update_mode()

    def open_uplink(self, fmt: AudioFormat = DEFAULT_FORMAT) -> Uplink:
        """Microphone audio in ``fmt``, starting with the last ``preroll_ms`` of frames."""
        self._set_hot(True)  # brings the capture thread's pre-roll over
        uplink = Uplink(self.config, fmt, self._preroll.snapshot(), self._uplink_closed)
        self._uplinks.add(uplink)
        self._update_mode()
        return uplink

    def open_playback(self, fmt: AudioFormat) -> Playback:
        """A new playback (agent audio in ``fmt``); closes the previous one."""
        if self._playback is not None:
            self._playback.close()
        self._speaker.reset()
        self._playback = Playback(self._speaker, fmt, on_push=self._played, on_close=self._playback_closed)
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
        if not self._speaker.ok:
            return 0.0
        out_rate = self._speaker.rate
        mono = Resampler(rate, out_rate).process(samples, last=True) if rate != out_rate else samples
        self._speaker.play_sound(mono)
        self._update_mode()  # echo handling hears the microphone while the sound plays
        return len(samples) / rate

    @property
    def volume(self) -> float:
        """Speaker volume 0.0–1.0 for everything played (agent and sounds); may change at any time."""
        return self._speaker.volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._speaker.volume = value

    @property
    def muted(self) -> bool:
        """True: the speaker plays silence (the agent's audio is still received and timed)."""
        return self._speaker.muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self._speaker.muted = value

    @property
    def speaking(self) -> bool:
        """True while speaker audio is queued or still in the device."""
        return self._speaker.speaking

    def status(self) -> dict[str, Any]:
        """Devices, errors, uplink and jitter counters (JSON-friendly)."""
        i, o = self._devices["input"], self._devices["output"]
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
            "jitter": self._speaker.stats(),
            "playback_dropped_bytes": self._playback.dropped_bytes if self._playback else 0,
        }

    # ------------------------------------------------------------------ what needs frames

    def _uplink_closed(self, uplink: Uplink) -> None:
        self._uplinks.discard(uplink)
        self._update_mode()

    def _playback_closed(self, playback: Playback) -> None:
        if self._playback is playback:
            self._playback = None
            self._speaker.reset()

    def _played(self, playback: Playback) -> None:
        """After every push: a held-back resampler tail to flush; audible speaker → echo handling."""
        if playback.tail_due is not None:
            self._tail_wanted.set()
        if not self._hot:
            self._update_mode()

    def _frames_needed(self) -> bool:
        """Whether microphone frames must flow to Trio now (else the thread keeps the pre-roll)."""
        if self._uplinks or self._listeners or not self._mic_enabled:
            return True
        # echo handling must see the microphone while the speaker is (recently) audible,
        # so that the pre-roll never holds unhandled echo; gated listeners see it stop
        return (self.config.echo != "off" or bool(self._gated)) and self._speaker.audible_within(self._echo_quiet_s)

    def _update_mode(self) -> None:
        self._set_hot(self._frames_needed())
        if self._capture is not None:
            self._capture.block_periods = self._block_periods()
            self._capture.gate_dbfs = min(self._gated.values()) if self._gated else None

    def _block_periods(self) -> int:
        if self._uplinks:
            return max(1, self.config.chunk_ms // FRAME_MS)
        if self._hot:
            return IDLE_CAPTURE_PERIODS
        return GATED_CAPTURE_PERIODS if self._gated else QUIET_CAPTURE_PERIODS

    def _set_hot(self, hot: bool) -> None:
        """Start or stop the hand-off of microphone blocks; starting brings the raw pre-roll over."""
        if hot == self._hot:
            return
        self._hot = hot
        capture = self._capture
        if not hot:
            self._epoch = None
            if capture is not None:
                capture.listen(False)
            return
        self._epoch = None
        if capture is not None:
            self._start_frames(capture.listen(True))

    def _start_frames(self, listening: Listening) -> None:
        """A new run of blocks: the pre-roll becomes the thread's raw ring, converted."""
        self._epoch = listening.epoch
        self._cap_frames.reset()
        self._preroll.clear()
        self._speaker.take_far()  # far periods from before are no longer aligned
        if listening.raw is not None and len(listening.raw):
            mono = to_mono(listening.raw, listening.channels) if listening.channels > 1 else listening.raw
            self._preroll.write(self._cap_frames.feed(mono, listening.rate))

    # ------------------------------------------------------------------ devices

    def _new_jitter(self, rate: int) -> JitterBuffer:
        c = self.config
        return JitterBuffer(
            rate, min_ms=c.jitter_min_ms, max_ms=c.jitter_max_ms, start_ms=c.jitter_start_ms, fade_ms=c.fade_ms
        )

    def _device_loop(self, direction: Direction, name: str, backoff: tuple[float, float]) -> DeviceLoop:
        return DeviceLoop(
            direction, name, functools.partial(self._make_thread, direction), backoff=backoff,
            on_opened=self._on_opened, on_failed=self._on_failed,
        )  # fmt: skip

    async def _flush_tails(self) -> None:
        """Play held-back resampler tails of idle playback (see :meth:`Playback.flush_tail`).

        Sleeps until a push leaves a tail held back, then until it is due (no wake-ups while idle).
        """
        while True:
            await self._tail_wanted.wait()
            self._tail_wanted = trio.Event()
            while (playback := self._playback) is not None and (due := playback.tail_due) is not None:
                await trio.sleep_until(due)
                playback.flush_tail(trio.current_time())

    def _make_thread(self, direction: Direction, on_event: Callable[[Any], object]) -> CaptureThread | PlaybackThread:
        assert self._trio_token is not None
        c = self.config
        common: dict[str, Any] = dict(pacing=self.config.pacing, opener=self._opener)
        if direction == "input":
            capture = CaptureThread(
                c.input, c.input_rate, FRAME_MS, self._trio_token, on_event,
                on_data=self._on_capture, on_loud=self._on_loud, preroll_ms=c.preroll_ms, listening=self._hot,
                **common,
            )  # fmt: skip
            capture.block_periods = self._block_periods()
            capture.gate_dbfs = min(self._gated.values()) if self._gated else None
            self._capture = capture
            self._epoch = capture.epoch if self._hot else None
            self._cap_frames.reset()
            return capture
        return PlaybackThread(
            c.output, c.output_rate, c.device_period_ms, self._trio_token, on_event, source=self._speaker, **common
        )

    def _on_opened(self, event: DeviceOpened) -> None:
        if event.direction == "output":
            self._speaker.opened(event.rate)  # before ``ok``: pushes from now on use the device's rate

    def _on_failed(self, event: DeviceFailed) -> None:
        self._last_error = f"{event.direction} {event.name!r}: {event.message}"
        if event.direction == "output":
            self._speaker.failed()

    # ------------------------------------------------------------------ capture (Trio thread)

    def _on_capture(self, data: np.ndarray, rate: int, channels: int, epoch: int) -> None:
        """A device block → 16 kHz frames → echo/mute → pre-roll, uplinks, listeners."""
        if epoch != self._epoch:
            return  # handed over before the engine stopped (or restarted) listening
        try:
            mono = to_mono(data, channels) if channels > 1 else data
            frames = self._cap_frames.feed(mono, rate)
            if len(frames):
                self._on_frames(frames, trio.current_time())
        except Exception:
            log.exception("audio capture processing failed")
        self._update_mode()  # nothing needs the frames any more: the thread keeps them

    def _on_frames(self, frames: np.ndarray, now: float) -> None:
        if self._echo is not None:
            frames = self._cancel_echo(frames)
        elif self.config.echo == "half_duplex" and self._speaker.audible_within(HALF_DUPLEX_TAIL_S):
            frames = np.zeros_like(frames)
        if not self._mic_enabled:
            frames = np.zeros_like(frames)
        self._preroll.write(frames)
        for uplink in list(self._uplinks):
            uplink.push_block(frames)
        if self._listeners or self._gated:
            deliver([*self._listeners, *self._gated], frames, now)

    def _on_loud(self, data: np.ndarray, rate: int, channels: int, start: int) -> None:
        """A loud block while no frames flow (the level gate): to the gated listeners only."""
        if self._hot or not self._gated:
            return  # frames flow: every listener gets them from _on_capture
        try:
            if start != self._gate_next:
                self._gate_frames.reset()  # not the block after the last loud one
            self._gate_next = start + len(data) // channels
            mono = to_mono(data, channels) if channels > 1 else data
            frames = self._gate_frames.feed(mono, rate)
            if len(frames):
                deliver(list(self._gated), frames, trio.current_time())
        except Exception:
            log.exception("audio capture processing failed")

    def _cancel_echo(self, frames: np.ndarray) -> np.ndarray:
        """Far-end periods written since the last block first, then the microphone frames."""
        periods, rate = self._speaker.take_far()
        if periods:
            far = self._far_frames.feed(np.concatenate(periods), rate)
            if len(far):
                self._echo.far(far)
        out: np.ndarray = self._echo.near(frames)  # the block at once: cheaper, the same frames
        return out

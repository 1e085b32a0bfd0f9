"""Adaptive playout (jitter) buffer for agent audio (pure: time is passed in).

Agent audio arrives in bursts, usually faster than real time (a 2 s reply may arrive
within 300 ms); that is not jitter. What matters is whether each sample has arrived by the
time it must play. The buffer therefore schedules playout in *time*, against the time
each piece of audio was due, rather than against the queue depth (with 100 ms chunks
arriving in real time the depth just before each arrival is 0 whatever the target, so a
depth rule runs dry on every arrival).

* **Reply schedule.** A *reply* (talk spurt) begins with audio arriving while the buffer
  is idle. Its audio at offset ``d`` (seconds of this reply received before it) is *due* at
  ``base + d``, where ``base`` is the earliest time consistent with every arrival so far
  if the reply were sent in real time: the first arrival's time, lowered whenever a chunk
  arrives earlier than due (``base = min(arrival - d)``). Audio sent faster than real time
  therefore pulls ``base`` back and is never late: bursts are not jitter.
* **Lateness.** Each chunk's lateness is ``arrival - (base + d)`` (≥ 0, measured before
  ``base`` is lowered by it). The buffer keeps the lateness of the chunks that make up
  the last :data:`LATENESS_WINDOW_S` seconds of received audio (a chunk leaves once it
  lies wholly before them; across replies and :meth:`~JitterBuffer.reset`: it describes
  the network) and its peak. The peak, not a percentile: the aim is no gaps at all.
* **Target.** ``target_ms = clamp(min_ms, max_ms, max(floor, peak + period))`` where
  ``period`` is the last device period (``n`` of the last pull): a pull takes a whole
  period at once, so audio must be there one period early. ``floor`` starts at
  ``start_ms`` (the prior, before anything is measured), is raised to
  :data:`UNDERRUN_GROWTH` × the target on an underrun, and is multiplied by
  :data:`STEADY_DECAY` after every :data:`STEADY_PLAYOUT_S` of playout without an
  underrun (down to ``min_ms``). So the target follows the worst recent lateness at
  once, and falls slowly when arrivals are steady (the floor decays, late arrivals leave
  the window).
* **Playout point.** Playout of a reply (re)starts when ``now ≥ base + p + target`` where
  ``p`` is how much of the reply has already played (0 at the start): every sample then
  plays ``target`` after it was due, which covers any lateness up to ``target − period``.
  It also starts at once when the queue holds ``max_ms`` (waiting longer would only add
  latency beyond the bound). A reply shorter than the target, or a stream that went
  quiet, thus starts ``target`` after its audio was due. A lone first chunk waits
  ``target`` (one arrival cannot tell real time from a burst), but a second chunk
  arriving early moves ``base`` back: a reply sent 4× faster than real time in 100 ms
  chunks starts as its second chunk arrives.
* **Underrun.** When playout runs dry the buffer remembers when (the time its last
  queued sample has played, ``now`` of a pull being the time its first sample plays).
  Audio arriving by then is in time for the next pull: playout simply goes on. Audio
  arriving later but within :data:`UNDERRUN_WINDOW_S` of that moment means the reply was
  still in progress and a gap was heard: that is an underrun (counted, floor raised,
  lateness measured against the same reply's schedule) and playout resumes at the
  playout point above. Audio arriving later than the window is a new reply (the user had
  to speak in between), not an underrun, and gets a fresh schedule.
* **Interruption.** Everything with ``event_id`` < the interruption's id is discarded,
  queued or arriving later; audio with an id ≥ it plays. That is the JS client's rule
  (``VoiceConversation.handleAudio``, what the ElevenLabs widget runs): on the service the
  interruption carries the interrupting turn's id and the agent's reply to that turn
  shares it, so it must be heard (the Python client's ``<=`` drops it; NOTES). If it was
  audible, the next pull starts with a ``fade_ms`` fade-out of the audio that would have
  played next (so the first faded sample continues the waveform: no click), then silence.
  Newer audio already queued starts a new reply whose audio is taken as due at the
  interruption; otherwise the next arrival does.

The learned lateness, floor and period survive :meth:`JitterBuffer.reset` (they describe
the network and the device, not the conversation); counters are cumulative.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

DEFAULT_MIN_MS = 20
"""Lowest target depth the buffer adapts down to."""
DEFAULT_MAX_MS = 400
"""Highest target depth the buffer adapts up to."""
DEFAULT_START_MS = 60
"""Initial target depth (the floor before any lateness is measured)."""
DEFAULT_FADE_MS = 5
"""Length of the fade-out after an interruption."""

UNDERRUN_WINDOW_S = 0.5
"""Audio arriving within this long after running dry means the reply was in progress."""
UNDERRUN_GROWTH = 1.5
"""On an underrun the floor becomes this × the target."""
STEADY_PLAYOUT_S = 10.0
"""Seconds of playout without an underrun after which the floor is lowered one step."""
STEADY_DECAY = 0.75
"""Floor multiplier after each steady period."""
LATENESS_WINDOW_S = 30.0
"""Seconds of received audio whose chunks' lateness the target covers."""

_EPS = 1e-6  # seconds: float slack when comparing times (under a sample at 48 kHz)


class JitterBuffer:
    """Adaptive playout buffer of int16 mono samples at one fixed rate."""

    def __init__(
        self,
        rate: int,
        *,
        min_ms: int = DEFAULT_MIN_MS,
        max_ms: int = DEFAULT_MAX_MS,
        start_ms: int = DEFAULT_START_MS,
        fade_ms: int = DEFAULT_FADE_MS,
    ) -> None:
        """Create an empty buffer for audio at ``rate`` Hz."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if not 0 < min_ms <= start_ms <= max_ms:
            raise ValueError(
                f"need 0 < min_ms <= start_ms <= max_ms, got {min_ms}, {start_ms}, {max_ms}"
            )
        if fade_ms < 0:
            raise ValueError(f"fade_ms must be >= 0, got {fade_ms}")
        self.rate = rate
        self.min_ms = float(min_ms)
        self.max_ms = float(max_ms)
        self.fade_samples = round(fade_ms * rate / 1000)
        self._steady_period = round(STEADY_PLAYOUT_S * rate)
        self._window = round(LATENESS_WINDOW_S * rate)
        self._max_samples = math.ceil(self.max_ms * rate / 1000.0 - 1e-9)
        self._floor_ms = float(start_ms)
        self._period_ms = 0.0
        # (received position at the chunk's end, lateness ms), lateness strictly
        # decreasing: a sliding-window maximum
        self._late: deque[tuple[int, float]] = deque()
        self._received = 0  # samples ever accepted (the window's clock)
        self.underruns = 0
        self.dropped_events = 0
        self.discarded_samples = 0
        self.played_samples = 0
        self._queue: deque[tuple[int, np.ndarray]] = deque()
        self._head_offset = 0
        self._queued = 0
        self._started = False
        self._fade = np.zeros(0, dtype=np.int16)
        self._fade_pos = 0
        self._interrupted_id: int | None = None
        self._dry_at: float | None = None
        self._steady = 0
        # the current reply: its schedule base, samples received and played
        self._base: float | None = None
        self._reply_in = 0
        self._reply_out = 0

    # --- state -------------------------------------------------------------------------

    @property
    def target_ms(self) -> float:
        """Current target playout delay in milliseconds."""
        want = max(self._floor_ms, self.lateness_ms + self._period_ms)
        return min(self.max_ms, max(self.min_ms, want))

    @property
    def lateness_ms(self) -> float:
        """Peak lateness of the chunks of the last :data:`LATENESS_WINDOW_S` of audio."""
        return self._late[0][1] if self._late else 0.0

    @property
    def depth_ms(self) -> float:
        """Queued (not yet played) audio in milliseconds."""
        return self._queued * 1000.0 / self.rate

    @property
    def playing(self) -> bool:
        """True while audible audio is queued or a fade-out is pending."""
        return self._queued > 0 or self._fade_pos < len(self._fade)

    @property
    def started(self) -> bool:
        """True while playing out (False while pre-buffering or idle)."""
        return self._started

    def stats(self) -> dict[str, float | int]:
        """Counters and levels for status reports."""
        return {
            "target_ms": self.target_ms,
            "depth_ms": self.depth_ms,
            "lateness_ms": self.lateness_ms,
            "underruns": self.underruns,
            "dropped_events": self.dropped_events,
            "discarded_ms": self.discarded_samples * 1000.0 / self.rate,
            "played_ms": self.played_samples * 1000.0 / self.rate,
        }

    # --- input -------------------------------------------------------------------------

    def push(self, event_id: int, samples: np.ndarray, now: float) -> bool:
        """Queue agent audio; False (dropped) if ``event_id`` was interrupted."""
        if self._interrupted_id is not None and event_id < self._interrupted_id:
            self.dropped_events += 1
            return False
        s = np.asarray(samples, dtype=np.int16).reshape(-1)
        if len(s) == 0:
            return True
        in_reply = self._base is not None
        if self._dry_at is not None:
            in_reply = now - self._dry_at <= UNDERRUN_WINDOW_S
            if now <= self._dry_at + _EPS:
                self._started = True  # in time for the next pull: no gap, play on
            elif in_reply:
                self._on_underrun()
            self._dry_at = None
        if not in_reply:
            self._new_reply(now)
        assert self._base is not None
        due = self._base + self._reply_in / self.rate
        late = now - due
        if late < 0:  # early (sent faster than real time): the schedule moves earlier
            self._base = now - self._reply_in / self.rate
            late = 0.0
        self._queue.append((event_id, s))
        self._queued += len(s)
        self._reply_in += len(s)
        self._received += len(s)
        self._note_lateness(late * 1000.0)
        return True

    def _new_reply(self, base: float) -> None:
        self._base = base
        self._reply_in = self._queued
        self._reply_out = 0

    def _note_lateness(self, late_ms: float) -> None:
        """Record the chunk just received; forget chunks wholly out of the window."""
        while self._late and self._late[-1][1] <= late_ms:
            self._late.pop()
        self._late.append((self._received, late_ms))  # keyed by where the chunk ends
        while self._late[0][0] <= self._received - self._window:
            self._late.popleft()

    def _on_underrun(self) -> None:
        self.underruns += 1
        self._floor_ms = min(self.max_ms, self.target_ms * UNDERRUN_GROWTH)
        self._steady = 0

    def interrupt(self, event_id: int, now: float) -> None:
        """Discard all audio with id < ``event_id`` (queued and late); fade out if audible."""
        if self._interrupted_id is None or event_id > self._interrupted_id:
            self._interrupted_id = event_id
        self._dry_at = None
        if not self._queue:
            self._base = None  # the next arrival is a new reply
            return
        head_dead = self._queue[0][0] < event_id
        if head_dead and self._started and self.fade_samples > 0:
            self._fade = self._make_fade(event_id)
            self._fade_pos = 0
        kept: deque[tuple[int, np.ndarray]] = deque()
        for i, (eid, chunk) in enumerate(self._queue):
            if eid >= event_id:
                kept.append((eid, chunk))
                continue
            dead = len(chunk) - (self._head_offset if i == 0 else 0)
            self.discarded_samples += dead
            self._queued -= dead
        self._queue = kept
        if head_dead:
            self._head_offset = 0
            self._started = False  # newer audio (if any) pre-buffers afresh
            if self._queue:
                self._new_reply(now)  # newer audio: a new reply, taken as due now
            else:
                self._base = None
        else:
            self._reply_in = self._reply_out + self._queued

    def _make_fade(self, event_id: int) -> np.ndarray:
        """The next ``fade_samples`` of the dead audio, ramped down (no click)."""
        parts: list[np.ndarray] = []
        have = 0
        for i, (eid, chunk) in enumerate(self._queue):
            if eid >= event_id or have >= self.fade_samples:
                break
            part = chunk[self._head_offset :] if i == 0 else chunk
            part = part[: self.fade_samples - have]
            parts.append(part)
            have += len(part)
        src = np.concatenate(parts).astype(np.float64)
        if len(src) < self.fade_samples:  # hold the last value: the ramp still ends at 0
            src = np.pad(src, (0, self.fade_samples - len(src)), mode="edge")
        n = self.fade_samples
        gain = (n - np.arange(n)) / (n + 1.0)
        return np.round(src * gain).astype(np.int16)

    def reset(self) -> None:
        """Forget queued audio, fades and interruptions (new conversation)."""
        self._queue.clear()
        self._head_offset = 0
        self._queued = 0
        self._started = False
        self._fade = np.zeros(0, dtype=np.int16)
        self._fade_pos = 0
        self._interrupted_id = None
        self._dry_at = None
        self._steady = 0
        self._base = None
        self._reply_in = 0
        self._reply_out = 0

    # --- output ------------------------------------------------------------------------

    def playout_at(self) -> float | None:
        """When pre-buffered audio starts playing by the schedule (None if idle or playing)."""
        if self._started or self._queued == 0 or self._base is None:
            return None
        return self._base + self._reply_out / self.rate + self.target_ms / 1000.0

    def pull(self, n: int, now: float) -> np.ndarray:
        """Exactly ``n`` int16 samples to play next (zeros while pre-buffering or dry)."""
        out = np.zeros(max(n, 0), dtype=np.int16)
        if n > 0:
            self._period_ms = n * 1000.0 / self.rate
        pos = 0
        if self._fade_pos < len(self._fade):
            k = min(len(out), len(self._fade) - self._fade_pos)
            out[:k] = self._fade[self._fade_pos : self._fade_pos + k]
            self._fade_pos += k
            pos = k
        if pos < len(out) and not self._started and self._queued > 0:
            at = self.playout_at()
            if at is None or now + _EPS >= at or self._queued >= self._max_samples:
                self._started = True
        if pos < len(out) and self._started:
            took = self._take_into(out, pos)
            self._reply_out += took
            self._count_playout(took)
            if self._queued == 0:
                self._started = False
                self._dry_at = now + (pos + took) / self.rate  # when the last sample plays
        return out

    def _take_into(self, out: np.ndarray, pos: int) -> int:
        start = pos
        while pos < len(out) and self._queue:
            _, chunk = self._queue[0]
            k = min(len(out) - pos, len(chunk) - self._head_offset)
            out[pos : pos + k] = chunk[self._head_offset : self._head_offset + k]
            pos += k
            self._head_offset += k
            if self._head_offset == len(chunk):
                self._queue.popleft()
                self._head_offset = 0
        took = pos - start
        self._queued -= took
        return took

    def _count_playout(self, took: int) -> None:
        self.played_samples += took
        self._steady += took
        while self._steady >= self._steady_period:
            self._steady -= self._steady_period
            self._floor_ms = max(self.min_ms, self._floor_ms * STEADY_DECAY)

"""Figure 6: the jitter buffer against a plain FIFO on seeded arrival traces, in virtual time.

Agent replies (4 s of audio in 100 ms chunks, sent in real time, 3 s apart) reach the
kiosk through one of three links:

* ``steady``: every chunk arrives when sent;
* ``jitter100``: each chunk is delayed by a uniform 0–100 ms (order kept, as on TCP);
* ``bursts``: every 2 s the link is out for 500 ms, then delivers what it held at once.

The device pulls 10 ms periods. An *underrun* is a silent gap inside a reply (the buffer
ran dry while more of the reply was still to come), counted the same way for both.
*Added latency* is, per sample, play time − arrival time, averaged.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import numpy as np

from kioskd.audio.jitter import JitterBuffer

from .common import RATE, summary

PERIOD = 160  # 10 ms device period
CHUNK_S = 0.1
REPLY_S = 4.0
GAP_S = 3.0
TRACES = ("steady", "jitter100", "bursts")


def arrivals(kind: str, minutes: float, seed: int) -> list[tuple[float, int, int]]:
    """(arrival time, reply index, samples) for every chunk of the trace."""
    rng = random.Random(seed)
    out: list[tuple[float, int, int]] = []
    t0 = 0.5
    reply = 0
    last = 0.0
    while t0 < minutes * 60:
        n = int(REPLY_S / CHUNK_S)
        for k in range(n):
            sent = t0 + k * CHUNK_S
            if kind == "steady":
                arr = sent
            elif kind == "jitter100":
                arr = sent + rng.uniform(0.0, 0.1)
            else:  # bursts: link out for 500 ms every 2 s
                phase = sent % 2.0
                arr = sent - phase + 2.0 if phase >= 1.5 else sent
            arr = max(arr, last)
            last = arr
            out.append((round(arr, 6), reply, int(CHUNK_S * RATE)))
        reply += 1
        t0 += REPLY_S + GAP_S
    return out


class Fifo:
    """Plays whatever has arrived, at once; silence when empty."""

    def __init__(self) -> None:
        self.q: deque[np.ndarray] = deque()
        self.underruns = 0

    def push(self, event_id: int, samples: np.ndarray, now: float) -> None:
        self.q.append(samples)

    def pull(self, n: int, now: float) -> np.ndarray:
        out = np.zeros(n, np.int16)
        pos = 0
        while pos < n and self.q:
            c = self.q[0]
            k = min(n - pos, len(c))
            out[pos : pos + k] = c[:k]
            pos += k
            if k == len(c):
                self.q.popleft()
            else:
                self.q[0] = c[k:]
        return out


def simulate(buf: Any, trace: list[tuple[float, int, int]], minutes: float) -> dict[str, float]:
    """Run ``buf`` over ``trace``; underruns per minute and mean added latency (ms)."""
    arr_times = np.concatenate([np.full(n, t) for t, _, n in trace])
    reply_of = np.concatenate([np.full(n, r) for _, r, n in trace])
    reply_end = {r: i for i, r in enumerate(reply_of)}  # last sample index of each reply
    i_next = 0  # next chunk to push
    played = 0  # samples of agent audio played so far
    lat_sum = 0.0
    gaps = 0
    in_gap = False
    ticks = int(minutes * 60 * RATE / PERIOD) + 1
    for tick in range(ticks):
        now = tick * PERIOD / RATE
        while i_next < len(trace) and trace[i_next][0] <= now + 1e-9:
            _, r, n = trace[i_next]
            buf.push(r + 1, np.full(n, 1000, np.int16), now)
            i_next += 1
        out = buf.pull(PERIOD, now)
        audible = np.flatnonzero(out)
        k = len(audible)
        if k:
            idx = np.arange(played, played + k)
            lat_sum += float(np.sum(now + audible / RATE - arr_times[idx]))
            played += k
        # a gap inside a reply: the last played sample is not its reply's last one
        mid_reply = 0 < played < len(arr_times) and reply_end[reply_of[played - 1]] != played - 1
        if mid_reply and k < PERIOD:
            if not in_gap:
                gaps += 1
            in_gap = True
        elif k:
            in_gap = False
        if played >= len(arr_times):
            break
    return {
        "underruns_per_min": gaps / minutes,
        "counted_by_buffer_per_min": getattr(buf, "underruns", 0) / minutes,
        "final_target_ms": getattr(buf, "target_ms", 0.0),
        "added_latency_ms": 1000 * lat_sum / max(played, 1),
    }


def run(quick: bool) -> dict[str, Any]:
    """Figure 6 for every trace: JitterBuffer and FIFO, over several seeds."""
    minutes = 2.0 if quick else 10.0
    seeds = range(3 if quick else 10)
    results: dict[str, Any] = {"minutes_per_run": minutes, "runs": len(seeds)}
    for kind in TRACES:
        per: dict[str, dict[str, list[float]]] = {"jitter_buffer": {}, "fifo": {}}
        for seed in seeds:
            trace = arrivals(kind, minutes, seed)
            for name, buf in (("jitter_buffer", JitterBuffer(RATE)), ("fifo", Fifo())):
                r = simulate(buf, trace, minutes)
                for key, v in r.items():
                    per[name].setdefault(key, []).append(v)
        results[kind] = {
            name: {
                "underruns_per_min": summary(v["underruns_per_min"], unit="/min"),
                "added_latency_ms": summary(v["added_latency_ms"]),
                "counted_by_buffer_per_min": summary(v["counted_by_buffer_per_min"], unit="/min"),
                "final_target_ms": summary(v["final_target_ms"]),
            }
            for name, v in per.items()
        }
    return results

"""``scripts/bench``: run the figures, print the table, write bench-results.json."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from . import official
from .common import REPO

FIGURES = ("start", "conversation", "deadlink", "jitter", "throttle", "echo", "cost", "backend")


# --------------------------------------------------------------------------- figures


async def fig_start(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import conversation as c

    reps = 5 if quick else 20
    out: dict[str, Any] = {"ours": await c.ours_start(reps)}
    if with_official:
        out["official"] = await c.official_start(3 if quick else 10)
    return out


async def fig_conversation(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import conversation as c
    from . import cost

    seconds = 8 if quick else 60
    out: dict[str, Any] = {"seconds": seconds, "ours": await c.ours_conversation(seconds)}
    # the other side of figure 9's trade: latency at the longer uplink messages it measures the CPU of
    out["ours_by_chunk_ms"] = {ms: await c.ours_conversation(seconds, ms) for ms in cost.CHUNK_SWEEP_MS}
    if with_official:
        out["official"] = await c.official_conversation(seconds)
    return out


async def fig_jitter(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import jitter

    return jitter.run(quick)


async def fig_deadlink(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import deadlink

    out: dict[str, Any] = {"ours": await deadlink.ours(1 if quick else 5)}
    if with_official:
        out["official"] = await deadlink.official_run(quick)
    return out


async def fig_throttle(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import throttle

    return {"ours": await throttle.ours(5.0 if quick else 10.0)}


async def fig_echo(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import echo

    return await echo.run(quick, with_official)


async def fig_cost(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import cost

    return await cost.run(quick, with_official)


async def fig_backend(quick: bool, with_official: bool) -> dict[str, Any]:
    from . import backend

    return await backend.run(quick)


RUNNERS: dict[str, Callable[[bool, bool], Awaitable[dict[str, Any]]]] = {
    "start": fig_start,
    "conversation": fig_conversation,
    "deadlink": fig_deadlink,
    "jitter": fig_jitter,
    "throttle": fig_throttle,
    "echo": fig_echo,
    "cost": fig_cost,
    "backend": fig_backend,
}


# --------------------------------------------------------------------------- table


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if abs(v) >= 100:
        return f"{v:.0f}{unit}"
    if abs(v) >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, ours, official, ratio — official ÷ ours, or ours ÷ official for costs —, target, met) rows."""
    out: list[tuple[str, str, str, str, str, str]] = []

    def add(name: str, ours: Any, theirs: Any, unit: str, target: str, met: bool | None, ratio: bool = True,
            cost: bool = False) -> None:
        """``cost``: the ratio is ours ÷ official (a cost, where less is better), not official ÷ ours."""
        r = "—"
        if ratio and isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and ours > 0 and theirs > 0:
            r = f"{ours / theirs:.2f}× of official" if cost else f"{theirs / ours:.1f}×"
        m = "—" if met is None else ("met" if met else "NOT met")
        out.append((name, _fmt(ours, unit), _fmt(theirs, unit), r, target, m))

    def stat(fig: str, who: str, *path: str) -> Any:
        return _get(results, fig, who, *path)

    s = results.get("start", {})
    if s:
        pf = stat("start", "ours", "prefetched", "median")
        of = stat("start", "official", "backend_100ms", "median")
        add("1 start, prefetched URL (median)", pf, of, " ms", "≤ 150 ms, ≥ 5× official",
            None if pf is None else pf <= 150 and (of is None or of / pf >= 5))
        add("1 start, prefetched URL (p95)", stat("start", "ours", "prefetched", "p95"),
            stat("start", "official", "backend_100ms", "p95"), " ms", "", None)
        npf = stat("start", "ours", "no_prefetch_backend_100ms", "median")
        add("1 start, no prefetch, backend 100 ms (median)", npf, of, " ms", "", None)
    c = results.get("conversation", {})
    if c:
        for label, key, target, limit in (
            ("2 uplink latency", "uplink", "p95 ≤ 30 ms, ≥ 5× official", 30.0),
            ("3 barge-in → silent", "barge_in", "p95 ≤ 30 ms, ≥ 5× official", 30.0),
            ("4 ping → pong (sim RTT)", "ping", "p95 ≤ 5 ms, on par", 5.0),
        ):
            o_med, t_med = stat("conversation", "ours", key, "median"), stat("conversation", "official", key, "median")
            o95, t95 = stat("conversation", "ours", key, "p95"), stat("conversation", "official", key, "p95")
            met = None
            if o95 is not None:
                met = o95 <= limit
                if key != "ping" and t95 is not None:
                    met = met and t95 / o95 >= 5
            add(f"{label} (median)", o_med, t_med, " ms", "", None)
            add(f"{label} (p95)", o95, t95, " ms", target, met)
            if stat("conversation", "ours", key, "p99") is not None:
                add(f"{label} (p99)", stat("conversation", "ours", key, "p99"),
                    stat("conversation", "official", key, "p99"), " ms", "", None)
        for chunk_ms, figs in (c.get("ours_by_chunk_ms") or {}).items():
            for label, key in (("2 uplink latency", "uplink"), ("3 barge-in → silent", "barge_in")):
                add(f"{label} (p95) at {chunk_ms} ms uplink messages (figure 9's trade)", _get(figs, key, "p95"),
                    None, " ms", "", None, ratio=False)
    d = results.get("deadlink", {})
    if d:
        det = stat("deadlink", "ours", "detect_s", "median")
        tdet = stat("deadlink", "official", "stall_detect_s")
        add("5 stall → detected (median)", det, tdet, " s", "≤ 8 s", None if det is None else
            (stat("deadlink", "ours", "detect_s", "max") or det) <= 8.0)
        rec = stat("deadlink", "ours", "recover_s", "median")
        add(
            "5 network back → new conversation (median)",
            rec,
            stat("deadlink", "official", "recovers"),
            " s",
            "≤ 1 s, ≥ 5× official",
            None if rec is None else (stat("deadlink", "ours", "recover_s", "max") or rec) <= 1.0,
            ratio=False,
        )
        add("5 survives a dropped link", stat("deadlink", "ours", "survives_drop"),
            stat("deadlink", "official", "survives_drop"), "", "", None, ratio=False)
    j = results.get("jitter", {})
    if j:
        for trace in ("steady", "jitter100", "bursts"):
            jb = _get(j, trace, "jitter_buffer", "underruns_per_min", "median")
            ff = _get(j, trace, "fifo", "underruns_per_min", "median")
            lat = _get(j, trace, "jitter_buffer", "added_latency_ms", "median")
            flat = _get(j, trace, "fifo", "added_latency_ms", "median")
            target = "" if trace == "bursts" else "0 underruns, ≤ 150 ms"
            met = None if trace == "bursts" or jb is None else (jb == 0 and lat <= 150)
            out.append((f"6 jitter {trace}: underruns/min, latency, buffer vs FIFO",
                        f"{_fmt(jb)}/min, {_fmt(lat, ' ms')}", f"FIFO {_fmt(ff)}/min, {_fmt(flat, ' ms')}", "—",
                        target, "—" if met is None else ("met" if met else "NOT met")))
    t = results.get("throttle", {})
    if t:
        o = t.get("ours", {})
        out.append(("7 uplink at 64 kbit/s: peak backlog, speech / silence dropped",
                    f"{_fmt(o.get('peak_backlog_ms'), ' ms')}, {_fmt(o.get('dropped_speech_ms'), ' ms')} / "
                    f"{_fmt(o.get('dropped_silence_ms'), ' ms')}", "—", "—", "no speech dropped",
                    "met" if o.get("dropped_speech_ms") == 0 else "NOT met"))
    e = results.get("echo", {})
    if e:
        name = e.get("canceller", "aec")

        def upto(key: str, bar: float) -> bool | None:
            v = _get(e, key)
            return None if v is None else v <= bar

        add(
            f"8 double talk: visitor attenuation, room, after 2 s ({name}, median/10 ms)",
            _get(e, "doubletalk_room_db"),
            None,
            " dB",
            "≤ 3 dB",
            upto("doubletalk_room_db", 3.0),
            ratio=False,
        )
        add("8 double talk: visitor attenuation, room, after 1 s", _get(e, "doubletalk_room_after_1s_db"), None, " dB",
            "≤ 6 dB", upto("doubletalk_room_after_1s_db", 6.0), ratio=False)
        add("8 double talk: visitor attenuation, no echo path, after 1 s", _get(e, "doubletalk_noecho_db"), None, " dB",
            "≤ 3 dB", upto("doubletalk_noecho_db", 3.0), ratio=False)
        erle = _get(e, "erle_db")
        add(f"8 echo reduction ERLE, single talk ({name}, room)", erle, None, " dB", "≥ 25 dB",
            None if erle is None else erle >= 25.0, ratio=False)
        for key, label in (("barge_in_detect_ms", "room"), ("barge_in_detect_noecho_ms", "no echo path"),
                           ("barge_in_detect_reference_ms", "echo=off, no echo path (reference)")):
            p95 = _get(e, key, "p95")
            add(f"8 barge-in detect p95, {label}", p95, None, " ms", "≤ 300 ms" if key != "barge_in_detect_reference_ms"
                else "", None if p95 is None or "reference" in key else p95 <= 300.0, ratio=False)
        cands = e.get("candidates") or {}
        cpu_keys = (("cpu_pct", "blocks of 2 frames, as the engine"), ("cpu_pct_frame_by_frame", "frame by frame"))
        for key, label in cpu_keys:
            ours, aec3 = _get(cands, name, key), _get(cands, "aec3", key)
            if ours is not None:
                add(f"8 canceller CPU per second of audio, {label} (AEC3 beside it)",
                    f"{_fmt(ours)} % (AEC3 {_fmt(aec3)} %)", None, "", "≤ AEC3",
                    None if aec3 is None or key != "cpu_pct" else ours <= aec3, ratio=False)
        for cand, figs in cands.items():
            add(
                f"8 candidate {cand}: double talk room / no echo, ERLE, CPU",
                f"{_fmt(_get(figs, 'room_after_2s', 'median_db'))} / {_fmt(_get(figs, 'noecho_after_1s', 'median_db'))}"
                f" dB, {_fmt(_get(figs, 'erle_db'))} dB, {_fmt(_get(figs, 'cpu_pct'))} %",
                None,
                "",
                "",
                None,
                ratio=False,
            )
        for mode in ("aec", "off", "half_duplex"):
            si = _get(e, "modes", mode, "self_interruptions")
            add(f"8 self-interruptions, echo={mode}", si,
                _get(e, "official", "self_interruptions") if mode == "off" else None, "", "0" if mode == "aec" else "",
                None if si is None or mode != "aec" else si == 0, ratio=False)
    k = results.get("cost", {})
    if k:
        cpu = stat("cost", "ours", "conversation_cpu_pct")
        theirs = stat("cost", "official", "conversation_cpu_pct")
        has_theirs = isinstance(theirs, (int, float)) and theirs > 0
        add("9 CPU during conversation (% of a core)", cpu, theirs, " %", "≤ 2× official",
            None if cpu is None or not has_theirs else cpu <= 2 * theirs, cost=True)
        for chunk_ms, pct in (stat("cost", "ours", "conversation_cpu_pct_by_chunk_ms") or {}).items():
            if str(chunk_ms) != "20":
                add(f"9 CPU during conversation, {chunk_ms} ms uplink messages (uplink p95 follows)", pct, theirs,
                    " %", "", None, cost=True)
        for trigger in ("button", "vad", "manual"):
            idle = stat("cost", "ours", "idle_cpu_pct_by_trigger", trigger)
            add(f"9 CPU idle, trigger {trigger} (% of a core)", idle, theirs if has_theirs else None, " %",
                "≤ 0.5× official in conversation",
                None if idle is None or not has_theirs else idle <= 0.5 * theirs, cost=True)
        rss = stat("cost", "ours", "peak_rss_mb")
        their_rss = stat("cost", "official", "peak_rss_mb")
        add("9 peak RSS", rss, their_rss, " MB", "≤ official",
            None if rss is None or their_rss is None else rss <= their_rss, cost=True)
        add("9 start-up to READY=1", stat("cost", "ours", "ready_s"), None, " s", "", None, ratio=False)
        wake = k.get("wake_cost_us") or {}
        if wake:
            add("9 CPU per wake-up from a 20 ms sleep: time.sleep / epoll / trio.sleep",
                " / ".join(_fmt(wake.get(key), " µs") for key in ("time.sleep", "epoll.poll", "trio.sleep")),
                None, "", "", None, ratio=False)
    b = results.get("backend", {})
    if b and "error" not in b:
        for key, label in (("one_replica", "1 replica"), ("two_replicas", "2 replicas")):
            rate, p99 = _get(b, key, "per_s"), _get(b, key, "latency", "p99")
            target, met = ("", None) if key == "one_replica" else (
                "≥ 1,000/s, p99 ≤ 50 ms", None if rate is None or p99 is None else rate >= 1000 and p99 <= 50)
            add(f"10 backend signed URLs/s, {label} on Redis", rate, None, "/s", target, met, ratio=False)
            add(
                f"10 backend signed URL latency p50 / p99, {label}",
                f"{_fmt(_get(b, key, 'latency', 'median'), ' ms')} / {_fmt(p99, ' ms')}",
                None,
                "",
                "",
                None,
                ratio=False,
            )
        scaling = _get(b, "scaling")
        rig = f"{b.get('load_generator', 'python')} load, {b.get('stub', 'python')} stub"
        add(f"10 backend: two replicas / one, uncapped ({rig})", scaling, None, "×", "≥ 1.6×",
            None if scaling is None else scaling >= 1.6, ratio=False)
        capped = _get(b, "capped", "scaling")
        if capped is not None:
            share = _get(b, "capped", "share_of_a_core")
            one_c, two_c = (_fmt(_get(b, "capped", k, "per_s"), "/s") for k in ("one_replica", "two_replicas"))
            add(f"10 backend: two replicas / one, each capped at {share} of a core: {one_c} → {two_c}",
                capped, None, "×", "≥ 1.6×", capped >= 1.6, ratio=False)
        for key, label in (("healthz_one_replica", "/healthz (HTTP stack floor)"), ("one_replica", "signed URL"),
                           ("heartbeats_alone", "heartbeat")):
            add(
                f"10 backend CPU per {label} (replica, ms)",
                _get(b, key, "replica_cpu_ms_per_request"),
                None,
                " ms",
                "",
                None,
                ratio=False,
            )
        for key, one, many in (("two_replicas", "signed URL (2 replicas)", "signed URLs"),
                               ("heartbeats_alone", "heartbeat", "heartbeats")):
            cpu = _get(b, key, "cpu_ms_per_request") or {}
            total = sum(cpu.values()) if cpu else None
            parts = " + ".join(f"{name} {value:.2f}" for name, value in cpu.items())
            add(f"10 backend CPU per {one}, all processes: {parts}", total, None, " ms", "", None, ratio=False)
            add(f"10 backend: {many}/s that 2 idle cores carry at that cost", 2000 / total if total else None, None,
                "/s", "", None, ratio=False)
        hb = _get(b, "two_replicas_with_heartbeats", "heartbeats")
        hb99 = _get(hb, "latency", "p99")
        add(f"10 heartbeats, {_fmt(_get(hb, 'kiosks'))} kiosks at {_fmt(_get(hb, 'rate_per_s'), '/s')}: p50 / p99",
            f"{_fmt(_get(hb, 'latency', 'median'), ' ms')} / {_fmt(hb99, ' ms')}", None, "", "p99 ≤ 50 ms",
            None if hb99 is None else hb99 <= 50, ratio=False)
        for path in ("/fleet.json", "/metrics"):
            add(f"10 GET {path} with {_fmt(_get(b, 'kiosks'))} kiosks (median)", _get(b, "fleet_views", path, "median"),
                None, " ms", "", None, ratio=False)
        mixed = _get(b, "two_replicas_with_heartbeats", "signed_urls")
        add(
            "10 signed URLs meanwhile (2 replicas, open loop): rate, p99",
            f"{_fmt(_get(mixed, 'rate_per_s'), '/s')}, {_fmt(_get(mixed, 'latency', 'p99'), ' ms')}",
            None,
            "",
            "",
            None,
            ratio=False,
        )
    return out


def print_table(table: Sequence[tuple[str, ...]]) -> str:
    head = ("figure", "kioskd", "official client", "ratio", "target", "")
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(len(head))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in table:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": os.getloadavg()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced run (under 2 minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated figures: {', '.join(FIGURES)}")
    parser.add_argument("--no-official", action="store_true", help="skip the official elevenlabs client")
    parser.add_argument("--json", default=str(REPO / "bench-results.json"), help="where to write the results")
    args = parser.parse_args(argv)
    only = [f.strip() for f in args.only.split(",") if f.strip()] or list(FIGURES)
    unknown = [f for f in only if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    logging.basicConfig(level=logging.ERROR)
    why_not = None if not args.no_official else "--no-official given"
    if why_not is None:
        why_not = official.available()
    if why_not:
        print(f"official client: skipped: {why_not}", file=sys.stderr)
    results: dict[str, Any] = {
        "command": "scripts/bench " + " ".join(argv),
        "quick": args.quick,
        "machine": machine(),
        "official_client": {"measured": why_not is None, "skipped_because": why_not},
    }
    if why_not is None:
        import elevenlabs

        results["official_client"]["version"] = getattr(elevenlabs, "__version__", "?")
    t_all = time.monotonic()
    for name in only:
        t0 = time.monotonic()
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        try:
            results[name] = trio.run(RUNNERS[name], args.quick, why_not is None)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results.setdefault(name, {})["wall_s"] = round(time.monotonic() - t0, 1)
        print(f"[bench] {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    results["wall_s"] = round(time.monotonic() - t_all, 1)
    table = rows(results)
    text = print_table(table)
    names = ("figure", "kioskd", "official", "ratio", "target", "met")
    results["table"] = [dict(zip(names, r, strict=True)) for r in table]
    print(text)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(f"\nwrote {args.json} ({results['wall_s']} s)")
    return 1 if any(isinstance(results.get(n), dict) and "error" in results[n] for n in only) else 0

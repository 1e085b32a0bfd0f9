"""scripts/bench keeps working: its cheapest figure (the jitter simulation, no sockets) in --quick mode.

Benchmarks are not tests: nothing here checks a figure's value, only that the script runs,
prints its table and writes its JSON. The official-client part is skipped with --no-official
(it needs the optional ``elevenlabs`` package).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_jitter_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench"),
            "--quick",
            "--only",
            "jitter",
            "--no-official",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KIOSKD_BENCH_NO_REEXEC": "1"},  # already in .venv: no set-up (apt, pip) inside a test
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 jitter steady" in proc.stdout
    assert "official client: skipped" in proc.stderr
    data = json.loads(out.read_text())
    assert data["quick"] is True
    for trace in ("steady", "jitter100", "bursts"):
        for buffer in ("jitter_buffer", "fifo"):
            assert data["jitter"][trace][buffer]["underruns_per_min"]["n"] > 0

"""Figure 8's deterministic CPU measure: instructions per 10 ms frame of each echo canceller.

    .venv/bin/python scripts/benchlib/echo_instructions.py [--block N]   # ~30 s per canceller

Under ``valgrind --tool=callgrind``: the lab's 8 s room scene through a fresh canceller, in
blocks of N frames (default: the engine's 2), minus the same process without the run (imports,
the scene, the canceller's construction), ÷ 800 frames. Python's hash seed and OpenBLAS's
threads are pinned so that two runs count the same. Instructions are not time: numpy's
interpreter-heavy calls run at fewer instructions per cycle than AEC3's C++, so the process
time beside them (``scripts/bench --only echo``) is the figure that counts; this one is the
one that does not move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _child(name: str, run: bool, block: int) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    from benchlib.echo import candidates
    from kioskd.audio import echolab as lab

    scene = lab.make_scene()
    far, mic = scene.far.reshape(-1, 160), scene.mic.reshape(-1, 160)
    canceller = candidates()[name]()
    if run:
        for j in range(0, len(mic), block):
            canceller.far(far[j : j + block])
            canceller.near(mic[j : j + block])


def _instructions(name: str, run: bool, block: int) -> int:
    env = os.environ | {"PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
           "--child", name, "--block", str(block)] + (["--run"] if run else [])
    err = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output: {err[-500:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=2, help="microphone frames per call (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.run, args.block)
        return
    if shutil.which("valgrind") is None:
        sys.exit("echo_instructions: valgrind is not installed (apt-get install valgrind)")
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    from benchlib.echo import candidates

    for name in candidates():
        per_frame = (_instructions(name, True, args.block) - _instructions(name, False, args.block)) / 800
        print(f"{name}: {per_frame / 1000:.0f} k instructions per 10 ms frame (blocks of {args.block})", flush=True)


if __name__ == "__main__":
    main()

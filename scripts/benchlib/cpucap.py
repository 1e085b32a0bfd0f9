"""CPU caps for the backend figure's replicas (Linux cgroups, v1 ``cpu`` or v2; needs root).

"Two replicas ÷ one" on a machine whose cores the rig also needs is bounded by the cores,
not by the backend: one uncapped replica already takes a whole core. With each replica
capped at a fraction of a core, the cores left carry Redis, the stub and the load
generator, and the ratio shows whether replicas add up (they share only Redis) — what a
machine with a core per replica would show.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["available", "capped"]

_V1 = Path("/sys/fs/cgroup/cpu")
_V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _root() -> tuple[Path, int] | None:
    """Where to make groups and the cgroup version, if this process may."""
    if (_V1 / "cpu.cfs_quota_us").exists() and os.access(_V1, os.W_OK):
        return _V1, 1
    control = _V2 / "cgroup.subtree_control"
    if control.exists() and "cpu" in control.read_text().split() and os.access(_V2, os.W_OK):
        return _V2, 2
    return None


def available() -> bool:
    return _root() is not None


@contextmanager
def capped(pids: list[int], share: float) -> Iterator[None]:
    """Each of ``pids`` in its own group limited to ``share`` of one core; moved back on exit."""
    found = _root()
    if found is None:
        raise RuntimeError("no writable cgroup cpu controller (root and cgroup v1 cpu or v2 needed)")
    root, version = found
    groups = []
    home = {pid: _group_of(pid, root, version) for pid in pids}
    try:
        for pid in pids:
            group = root / f"kioskd-bench-{os.getpid()}-{pid}"
            group.mkdir()
            groups.append(group)
            quota = int(share * PERIOD_US)
            if version == 1:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            (group / "cgroup.procs").write_text(str(pid))  # all its threads
        yield
    finally:
        for group in groups:
            for pid_text in (group / "cgroup.procs").read_text().split():
                try:
                    (home.get(int(pid_text), root) / "cgroup.procs").write_text(pid_text)
                except ProcessLookupError:
                    pass  # it ended meanwhile
            group.rmdir()  # fails (EBUSY) if a process could not be moved back: never left capped unseen


def _group_of(pid: int, root: Path, version: int) -> Path:
    """The cgroup directory ``pid`` is in now, under ``root`` (to move it back there)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (version == 1 and "cpu" in controllers.split(",")) or (version == 2 and controllers == ""):
            return root / path.lstrip("/")
    return root

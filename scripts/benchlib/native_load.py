"""The backend figure's C parts: ``wrk`` as the closed-loop load generator, ``nginx`` as the upstream stub.

On two cores shared by everything, the Python load generator and stub cost ~0.25 ms of CPU
per signed URL beside the replicas' ~0.8 ms: the second replica then finds a fraction of
a core left, and "two replicas ÷ one" measures the rig, not the backend. ``wrk`` and
``nginx`` (Debian packages ``wrk`` and ``nginx-light``) do the same work for a few
microseconds each (``scripts/setup --bench`` installs them). Without them, or with
``KIOSKD_BENCH_PYTHON_LOAD=1``, the bench uses its Python parts and says so in
``load_generator`` / ``stub``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

import trio

__all__ = ["have_nginx", "have_wrk", "nginx_pids", "start_nginx", "wrk_load"]

_WRK_SCRIPT = """
local ports = {%(ports)s}
local first = %(first)d
local kiosks = %(kiosks)d
local path = "%(path)s"
local n = 0
local threads = {}
function setup(thread)
  local i = #threads
  thread.addr = wrk.lookup("127.0.0.1", tostring(ports[i %% #ports + 1]))[1]
  thread:set("offset", first + i * 1000003)
  table.insert(threads, thread)
end
function init(args)
  n = offset
end
function request()
  n = n + 1
  local token = string.format("bench-kiosk-%%05d-0123456789abcdefghijklmnopqrstuvwxyz", n %% kiosks)
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
function done(summary, latency, requests)
  local out = {}
  for _, p in ipairs({50, 95, 99}) do
    table.insert(out, string.format('"p%%d": %%d', p, latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "non2xx": %%d, "socket_errors": %%d, ' ..
    '"min": %%d, "max": %%d, %%s}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency.min, latency.max, table.concat(out, ", ")))
end
"""


#: Set to use the Python load generator and stub even where wrk and nginx are installed.
PYTHON_ONLY = bool(os.environ.get("KIOSKD_BENCH_PYTHON_LOAD"))


def have_wrk() -> bool:
    return not PYTHON_ONLY and shutil.which("wrk") is not None


def have_nginx() -> bool:
    return not PYTHON_ONLY and (shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists())


async def wrk_load(
    ports: list[int], seconds: float, first_kiosk: int, kiosks: int, path: str, connections_per_port: int
) -> dict[str, Any]:
    """A closed loop through ``wrk``: one thread per replica, each request the next kiosk's token.

    Returns the Python generator's keys (``per_s``, ``latency``, ``statuses``) plus
    ``loadgen_cpu_s``: wrk's own CPU, from the rusage of waited-for children.
    """
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"kioskd-bench-wrk-{os.getpid()}.lua"
    script.write_text(_WRK_SCRIPT % {"ports": ", ".join(map(str, ports)), "first": first_kiosk,
                                     "kiosks": kiosks, "path": path})
    threads = len(ports)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = await trio.run_process(
        ["wrk", f"-t{threads}", f"-c{threads * connections_per_port}", f"-d{max(1, round(seconds))}s",
         "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{ports[0]}{path}"],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    script.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.decode().strip() or done.stdout.decode()}")
    line = done.stdout.decode().strip().splitlines()[-1]
    figures = json.loads(line)
    seconds_run = figures["duration_us"] / 1e6
    requests = figures["requests"]
    ok = requests - figures["non2xx"] - figures["socket_errors"]
    latency = {"n": requests, "unit": "ms", **{k: figures[k] / 1000 for k in ("min", "max")},
               "median": figures["p50"] / 1000, "p95": figures["p95"] / 1000, "p99": figures["p99"] / 1000}
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"per_s": ok / seconds_run, "latency": latency,
            "statuses": {200: ok, "other": figures["non2xx"], "socket_errors": figures["socket_errors"]},
            "connections": threads * connections_per_port, "seconds": round(seconds_run, 2),
            "loadgen_cpu_s": cpu}


_NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(dir)s/nginx-body;
  proxy_temp_path %(dir)s/nginx-proxy;
  fastcgi_temp_path %(dir)s/nginx-fastcgi;
  uwsgi_temp_path %(dir)s/nginx-uwsgi;
  scgi_temp_path %(dir)s/nginx-scgi;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      default_type application/json;
      return 200 '%(body)s';
    }
  }
}
"""


async def start_nginx(workdir: Path, port: int, body: str) -> trio.Process:
    """nginx answering every request on ``port`` with ``body`` (JSON), keep-alive without limit."""
    conf = workdir / "nginx.conf"
    conf.write_text(_NGINX_CONF % {"dir": workdir, "port": port, "body": body})
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return await trio.lowlevel.open_process(
        [binary, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def nginx_pids(master: int) -> list[int]:
    """The master and its workers (their CPU is the stub's)."""
    children = Path(f"/proc/{master}/task/{master}/children")
    extra = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [master, *extra]

"""``GET /metrics`` in the Prometheus text format (prometheus-client).

- ``kioskd_signed_urls_total{result}``: ``issued`` or the error code of the reply
  (``unauthorized``, ``forbidden``, ``rate_limited``, ``upstream``, ``unavailable``, …)
- ``kioskd_upstream_errors_total``: replies whose error names the ElevenLabs API
- ``kioskd_request_duration_seconds{route}``: latency histograms per route
- ``kioskd_kiosks{state}`` and ``kioskd_kiosk_last_seen_seconds{kiosk}``: from the
  shared fleet view, computed at each scrape (so every replica reports the same)

Counters and histograms are per replica (Prometheus sums them). Open by default;
``metrics_token_sha256`` makes it need ``Authorization: Bearer``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kioskd.backend.fleet import FleetKiosk, fleet_view
from kioskd.backend.server_config import BackendServerConfig
from kioskd.backend.store import Store, StoreUnavailable

__all__ = ["Metrics"]

Handler = Callable[[Request], Awaitable[Response]]

#: Latency buckets (seconds): the 50 ms goal sits in the middle.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _result(response: Response) -> str:
    """``issued`` for a 200, else the ``error`` field of the JSON reply (``http_NNN`` without one)."""
    if response.status_code == 200:
        return "issued"
    try:
        error = json.loads(bytes(response.body)).get("error")
    except (ValueError, AttributeError):
        error = None
    return error if isinstance(error, str) and error.isidentifier() else f"http_{response.status_code}"


class _FleetCollector(Collector):
    """``kioskd_kiosks{state}`` and ``kioskd_kiosk_last_seen_seconds{kiosk}`` from the latest fleet view.

    Built at collection straight from the rows, not kept as a labelled Gauge child per kiosk.
    """

    def __init__(self) -> None:
        self.rows: list[FleetKiosk] = []

    def collect(self) -> Iterable[Metric]:
        """The two families (see the class docstring)."""
        states = Tally("offline" if not row.online and row.last_seen is not None else row.state for row in self.rows)
        kiosks = GaugeMetricFamily(
            "kioskd_kiosks", "Kiosks by state (offline: three heartbeats missed)", labels=["state"]
        )
        for state, n in sorted(states.items()):
            kiosks.add_metric([state], n)
        seen = GaugeMetricFamily(
            "kioskd_kiosk_last_seen_seconds", "Unix time of each kiosk's latest heartbeat", labels=["kiosk"]
        )
        for row in self.rows:
            if row.last_seen is not None:
                seen.add_metric([row.id], row.last_seen)
        return [kiosks, seen]


class Metrics:
    """The backend's metrics in their own registry (one per app, so tests can run several)."""

    def __init__(self, config: BackendServerConfig, store: Store, wall_clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._store = store
        self._wall_clock = wall_clock
        self.registry = CollectorRegistry()
        self.signed_urls = Counter(
            "kioskd_signed_urls", "Signed URL requests by result", ["result"], registry=self.registry
        )
        self.upstream_errors = Counter(
            "kioskd_upstream_errors", "Signed URL requests the ElevenLabs API failed", registry=self.registry
        )
        self.latency = Histogram(
            "kioskd_request_duration_seconds", "Request latency by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.fleet = _FleetCollector()
        self.registry.register(self.fleet)

    def timed(self, route: str, handler: Handler, *, count: bool = False) -> Handler:
        """``handler`` with its latency observed; ``count`` also tallies signed-URL results."""

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except StoreUnavailable:
                if count:
                    self.signed_urls.labels("unavailable").inc()
                raise
            finally:
                self.latency.labels(route).observe(time.perf_counter() - started)
            if count:
                result = _result(response)
                self.signed_urls.labels(result).inc()
                if result.startswith("upstream"):
                    self.upstream_errors.inc()
            return response

        return wrapped

    async def _refresh_fleet(self) -> None:
        records, heartbeats = await self._store.kiosks(), await self._store.heartbeats()
        self.fleet.rows = fleet_view(records, heartbeats, self._wall_clock(), self._config.heartbeat_interval)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``; 401 without the token when ``metrics_token_sha256`` is set."""
        expected = self._config.metrics_token_sha256.lower()
        if expected:
            scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
            digest = hashlib.sha256(token.strip().encode()).hexdigest()
            if scheme.lower() != "bearer" or not hmac.compare_digest(digest, expected):
                return JSONResponse(
                    {"error": "unauthorized", "detail": "metrics need the metrics token"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"},
                )
        await self._refresh_fleet()
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

"""The reference signing backend over real sockets, against a test double of the ElevenLabs endpoint."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from kioskd.backend import server
from kioskd.backend.server_config import (
    AddressThrottle,
    BackendServerConfig,
    KioskEntry,
    TokenBucket,
    parse_listen,
    parse_server_config,
)
from kioskd.config import ConfigError
from kioskd.ops import logs

API_KEY = "sk_test_backend_key_5f5f5f5f5f"
TOKEN_A = "kiosk-a-token-AAAAAAAAAAAAAAAAAAAAAAAA"
TOKEN_B = "kiosk-b-token-BBBBBBBBBBBBBBBBBBBBBBBB"
URL_SIGNATURE = "SIGSECRET0123456789"
SIGNED_URL = f"wss://127.0.0.1/v1/convai/conversation?agent_id=agent_1&conversation_signature={URL_SIGNATURE}"
IO_TIMEOUT = 10


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --------------------------------------------------------------------------- test double of ElevenLabs


@dataclass
class FakeElevenLabs:
    """Test double of ``GET /v1/convai/conversation/get-signed-url`` (not the real service).

    ``spellings``: which spellings of the endpoint it serves (others are 404, like any unknown route).
    """

    mode: str = "ok"  # ok | slow | error500 | bad_json | no_url
    spellings: tuple[str, ...] = ("get-signed-url",)
    seen_keys: list[str] = field(default_factory=list)
    seen_agents: list[str] = field(default_factory=list)
    seen_paths: list[str] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.seen_paths.append(request.url.path)
        self.seen_keys.append(request.headers.get("xi-api-key", ""))
        self.seen_agents.append(request.query_params.get("agent_id", ""))
        if request.headers.get("xi-api-key") != API_KEY:
            return JSONResponse({"detail": "invalid api key"}, status_code=401)
        if self.mode == "slow":
            await trio.sleep_forever()
        if self.mode == "error500":
            return PlainTextResponse("oops", status_code=500)
        if self.mode == "bad_json":
            return PlainTextResponse("{not json", media_type="application/json")
        if self.mode == "no_url":
            return JSONResponse({"url": "https://x"})
        agent = request.query_params["agent_id"]
        return JSONResponse({"signed_url": SIGNED_URL.replace("agent_1", agent)})

    def app(self) -> Starlette:
        return Starlette(routes=[Route(f"/v1/convai/conversation/{name}", self.endpoint) for name in self.spellings])


@asynccontextmanager
async def serving_app(app: Starlette) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1, port 0; yields its base URL."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(hypercorn_serve, app, config)
        yield url
        nursery.cancel_scope.cancel()


def backend_config(api_base: str, **changes: object) -> BackendServerConfig:
    base = BackendServerConfig(
        listen="127.0.0.1:0",
        api_base=api_base,
        rate_per_minute=6,
        burst=3,
        upstream_timeout=5.0,
        kiosk=[
            KioskEntry(id="lobby", token_sha256=sha(TOKEN_A), agents=["agent_1", "agent_2"]),
            KioskEntry(id="cafe", token_sha256=sha(TOKEN_B).upper(), agents=["agent_3"]),
        ],
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def serving_backend(config: BackendServerConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The backend on a real socket; yields a client whose base URL points at it."""
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(lambda task_status: server.serve(config, API_KEY, task_status=task_status))
        async with httpx.AsyncClient(base_url=url, timeout=IO_TIMEOUT) as client:
            yield client
        nursery.cancel_scope.cancel()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything logged during the test, through kioskd's formatter."""
    root = logging.getLogger()
    saved_level = root.level
    stream = io.StringIO()
    handler = logs.setup_logging("debug", stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(saved_level)
    logging.captureWarnings(False)


# --------------------------------------------------------------------------- over HTTP


async def test_good_token_gets_signed_url_and_nothing_secret_is_logged(log_output: io.StringIO) -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            health = await client.get("/healthz")
            r1 = await client.get("/signed-url", params={"agent_id": "agent_2"}, headers=bearer(TOKEN_A))
            r2 = await client.get("/signed-url", params={"agent_id": "agent_3"}, headers=bearer(TOKEN_B))
    assert health.status_code == 200 and health.json() == {"ok": True}
    assert r1.status_code == 200 and r1.json() == {"signed_url": SIGNED_URL.replace("agent_1", "agent_2")}
    assert r2.status_code == 200
    assert upstream.seen_keys == [API_KEY, API_KEY] and upstream.seen_agents == ["agent_2", "agent_3"]
    text = log_output.getvalue()
    assert "kiosk=lobby agent=agent_2 status=200" in text and "kiosk=cafe agent=agent_3 status=200" in text
    for secret in (API_KEY, TOKEN_A, TOKEN_B, URL_SIGNATURE):
        assert secret not in text


@pytest.mark.parametrize(("spellings", "asked"), [
    (("get-signed-url", "get_signed_url"), ["get-signed-url"]),
    (("get_signed_url",), ["get_signed_url"]),  # an older API: 404 for the new spelling, then the seed's
])
async def test_upstream_is_asked_as_get_signed_url_with_a_fallback_on_404(
    spellings: tuple[str, ...], asked: list[str]
) -> None:
    upstream = FakeElevenLabs(spellings=spellings)
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_2"}, headers=bearer(TOKEN_A))
    assert r.status_code == 200 and r.json() == {"signed_url": SIGNED_URL.replace("agent_1", "agent_2")}
    assert upstream.seen_paths == [f"/v1/convai/conversation/{name}" for name in asked]


async def test_neither_spelling_served_is_a_502_naming_the_404() -> None:
    upstream = FakeElevenLabs(spellings=())
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_2"}, headers=bearer(TOKEN_A))
    assert r.status_code == 502 and "404" in r.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-a-kiosk-token"),
        {"Authorization": TOKEN_A},
        {"Authorization": f"Basic {TOKEN_A}"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "unknown", "no-scheme", "basic", "scheme-only"],
)
async def test_bad_or_unknown_token_is_401(headers: dict[str, str], log_output: io.StringIO) -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=headers)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert upstream.seen_keys == []
    assert "not-a-kiosk-token" not in log_output.getvalue()


async def test_agent_not_allowed_is_403_and_missing_agent_400() -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            other = await client.get("/signed-url", params={"agent_id": "agent_3"}, headers=bearer(TOKEN_A))
            missing = await client.get("/signed-url", headers=bearer(TOKEN_A))
    assert other.status_code == 403 and other.json()["error"] == "forbidden"
    assert missing.status_code == 400
    assert upstream.seen_keys == []


async def test_over_the_rate_is_429_with_retry_after() -> None:
    upstream = FakeElevenLabs()
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            codes = []
            for _ in range(4):
                r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
                codes.append(r.status_code)
            other_kiosk = await client.get("/signed-url", params={"agent_id": "agent_3"}, headers=bearer(TOKEN_B))
    assert codes == [200, 200, 200, 429]
    assert 1 <= int(r.headers["retry-after"]) <= 10  # 6/min: a token every 10 s
    assert r.json()["error"] == "rate_limited"
    assert other_kiosk.status_code == 200  # buckets are per kiosk
    assert len(upstream.seen_keys) == 4


async def test_upstream_down_is_502_quickly(log_output: io.StringIO) -> None:
    config = backend_config(f"http://127.0.0.1:{closed_port()}", upstream_timeout=60.0)
    with trio.fail_after(IO_TIMEOUT):  # far below upstream_timeout: a refused connection fails at once
        async with serving_backend(config) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    assert r.status_code == 502 and r.json()["error"] == "upstream"
    assert "cannot reach" in r.json()["detail"]
    assert API_KEY not in r.text and API_KEY not in log_output.getvalue()


async def test_upstream_slow_is_502_after_the_timeout() -> None:
    upstream = FakeElevenLabs(mode="slow")
    with trio.fail_after(IO_TIMEOUT):
        async with (
            serving_app(upstream.app()) as api_base,
            serving_backend(backend_config(api_base, upstream_timeout=0.3)) as client,
        ):
            started = trio.current_time()
            r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
            waited = trio.current_time() - started
    assert r.status_code == 502 and "within 0.3 s" in r.json()["detail"]
    assert waited >= 0.3  # it did wait for the timeout (an upper bound is fail_after's job)
    assert upstream.seen_keys == [API_KEY]


@pytest.mark.parametrize(
    ("mode", "detail"),
    [("error500", "answered 500"), ("bad_json", "not JSON"), ("no_url", "no wss:// signed_url")],
)
async def test_upstream_bad_reply_is_502(mode: str, detail: str) -> None:
    upstream = FakeElevenLabs(mode=mode)
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    assert r.status_code == 502 and detail in r.json()["detail"]


# --------------------------------------------------------------------------- pure parts


def test_token_bucket_in_virtual_time() -> None:
    bucket = TokenBucket(rate_per_minute=6, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(10.0)
    assert bucket.take(104.0) == pytest.approx(6.0)  # a refused request spends nothing
    assert bucket.take(110.0) == 0.0
    assert bucket.take(110.0) == pytest.approx(10.0)
    assert bucket.take(1000.0) == 0.0  # refilled, but never beyond the burst
    assert [bucket.take(1000.0) for _ in range(3)][-1] == pytest.approx(10.0)


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (9.99, 10), (10.0, 10)])
def test_retry_after_is_whole_seconds_at_least_one(wait: float, header: int) -> None:
    assert TokenBucket.retry_after(wait) == header


def test_config_problems_name_their_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_config({"listen": "nohost", "burst": 0, "rate_per_minute": -1, "colour": "red"})
    problems = info.value.problems
    assert any(p.startswith("colour: unknown key") for p in problems)
    with pytest.raises(ConfigError) as info:
        parse_server_config({"listen": "nohost", "burst": 0, "rate_per_minute": -1, "kiosk": []})
    assert {p.split(":")[0] for p in info.value.problems} == {"listen", "burst", "rate_per_minute", "kiosk"}
    with pytest.raises(ConfigError) as info:
        parse_server_config({"kiosk": [{"id": "a", "token_sha256": "xyz", "agents": ["ag"], "pin": 1}]})
    assert {p.split(":")[0] for p in info.value.problems} == {"kiosk[0].pin", "kiosk[0].token_sha256"}
    entry = {"id": "a", "token_sha256": sha("t"), "agents": ["ag"]}
    with pytest.raises(ConfigError, match=r"kiosk\[1\]\.id: duplicate"):
        parse_server_config({"kiosk": [entry, entry]})


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "backend.example.toml"
    import tomllib

    config = parse_server_config(tomllib.loads(example.read_text()))
    assert config.listen == "127.0.0.1:8700" and config.kiosk


@pytest.mark.parametrize(("listen", "expected"), [("127.0.0.1:8700", ("127.0.0.1", 8700)), ("[::1]:0", ("::1", 0))])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


# --------------------------------------------------------------------------- command line


def test_hash_token_prints_a_matching_pair(capsys: pytest.CaptureFixture[str]) -> None:
    assert server.main(["hash-token"]) == 0
    lines = dict(line.split(" = ") for line in capsys.readouterr().out.splitlines() if " = " in line)
    assert len(lines["token"]) >= 40 and lines["token_sha256"] == sha(lines["token"])


def test_missing_api_key_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv(server.API_KEY_ENV, raising=False)
    assert server.main(["--config", str(tmp_path / "none.toml")]) == 2
    assert "ELEVENLABS_API_KEY is not set" in capsys.readouterr().err


def test_bad_config_exits_2_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv(server.API_KEY_ENV, API_KEY)
    path = tmp_path / "backend.toml"
    path.write_text(f'burst = "lots"\n[[kiosk]]\nid = "a"\ntoken_sha256 = "{sha("t")}"\nagents = ["x"]\n')
    assert server.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "burst: expected an integer" in err and API_KEY not in err


# --------------------------------------------------------------------------- against the simulator


async def test_against_the_simulator_upstream(log_output: io.StringIO) -> None:
    """The real contract check: kioskd.simulator's ElevenLabs endpoint, its API key and signed URLs."""
    from kioskd.simulator import SimulatorConfig, open_simulator

    sim_config = SimulatorConfig(api_key=API_KEY)
    with trio.fail_after(IO_TIMEOUT):
        async with open_simulator(sim_config) as sim:
            kiosk = KioskEntry(id="sim", token_sha256=sha(TOKEN_A), agents=[sim_config.agent_id])
            config = backend_config(sim.api_base, kiosk=[kiosk], upstream_timeout=0.5)
            async with serving_backend(config) as client:
                ok = await client.get("/signed-url", params={"agent_id": sim_config.agent_id}, headers=bearer(TOKEN_A))
                sim.upstream_faults.set("timeout", times=1)
                slow = await client.get(
                    "/signed-url", params={"agent_id": sim_config.agent_id}, headers=bearer(TOKEN_A)
                )
    assert ok.status_code == 200, ok.text
    signed = ok.json()["signed_url"]
    assert signed.startswith(sim.ws_base) and "token=" in signed
    assert slow.status_code == 502
    signed_token = signed.split("token=")[1].split("&")[0]
    text = log_output.getvalue()
    assert "status=200" in text and signed_token not in text and API_KEY not in text


# --------------------------------------------------------------------------- hardening (issue 14)


@dataclass
class HostileElevenLabs:
    """Test double of the endpoint misbehaving: rate limits, huge or endless replies, foreign URLs."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    signed_url: str = SIGNED_URL
    endless: bool = False
    sent_bytes: int = 0
    calls: int = 0

    async def endpoint(self, request: Request) -> Response:
        self.calls += 1
        if self.endless:
            chunk = b" " * 65536

            async def forever() -> AsyncIterator[bytes]:
                yield b'{"signed_url": "'
                while True:
                    self.sent_bytes += len(chunk)
                    yield chunk

            return StreamingResponse(forever(), media_type="application/json")
        if self.status != 200:
            return JSONResponse({"detail": "slow down"}, status_code=self.status, headers=self.headers)
        return JSONResponse({"signed_url": self.signed_url})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/convai/conversation/get_signed_url", self.endpoint)])


async def test_bad_agent_id_is_400_and_logged_escaped_and_cut_short(log_output: io.StringIO) -> None:
    """A 60 KB agent_id with forged fields and raw ESC bytes: 400, one short log line, nothing raw."""
    upstream = FakeElevenLabs()
    hostile = "x kiosk=lobby status=200 \x1b[2J\r\nlevel=info msg=forged " + "A" * 60000
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            replies = [
                await client.get("/signed-url", params={"agent_id": agent}, headers=bearer(TOKEN_A))
                for agent in (hostile, "agent 1", "a" * 65, "ägent")
            ]
            anonymous = await client.get("/signed-url", params={"agent_id": hostile})
    assert [r.status_code for r in replies] == [400, 400, 400, 400]
    assert all(hostile not in r.text for r in replies)
    assert anonymous.status_code in (400, 401)
    assert upstream.seen_keys == []
    # the backend's lines (the test's own httpx client logs its request URL too)
    lines = [line for line in log_output.getvalue().splitlines() if "logger=httpx" not in line]
    text = "\n".join(lines)
    assert "\x1b" not in text and "\r" not in text
    assert all(len(line) < 600 for line in lines), max(map(len, lines))
    assert not any(line.startswith("level=info msg=forged") for line in lines)
    request_lines = [line for line in lines if "signed url request" in line]
    assert len(request_lines) == 5
    for line in request_lines:  # quoted values hide the forged fields from a key=value reader
        keys = [key for key, _ in re.findall(r'(?:^|\s)([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)', line)]
        assert keys.count("status") == 1 and keys.count("kiosk") == 1 and keys.count("level") == 1, keys


def test_untrusted_values_are_quoted_escaped_and_cut() -> None:
    assert logs.untrusted("agent_1") == "agent_1"
    assert logs.untrusted("") == '""'
    assert logs.untrusted('a b="c"\x1b\n') == '"a b=\\"c\\"\\x1b\\n"'
    long = logs.untrusted("z" * 1000, limit=10)
    assert long == '"zzzzzzzzzz…(1000 chars)"'


async def test_unauthenticated_requests_are_throttled_per_address(log_output: io.StringIO) -> None:
    upstream = FakeElevenLabs()
    config = backend_config("http://127.0.0.1:1", unauthenticated_rate_per_minute=1.0, unauthenticated_burst=4)
    with trio.fail_after(IO_TIMEOUT):
        async with (
            serving_app(upstream.app()) as api_base,
            serving_backend(replace(config, api_base=api_base)) as client,
        ):
            codes = []
            for _ in range(10):
                r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer("guess"))
                codes.append(r.status_code)
            retry_after = int(r.headers["retry-after"])
            good = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    assert codes == [401] * 4 + [429] * 6
    assert 1 <= retry_after <= 60 and r.json()["error"] == "rate_limited"
    assert good.status_code == 429  # refused before authentication: a guess and a good token look alike
    lines = [line for line in log_output.getvalue().splitlines() if "signed url request" in line or "throttl" in line]
    assert len(lines) == 5, lines  # four 401s, then one line when the throttle starts: no 401 storm in the log


def test_address_throttle_in_virtual_time() -> None:
    throttle = AddressThrottle(rate_per_minute=6, burst=2, max_addresses=3)
    assert throttle.wait("a", 0.0) == 0.0
    throttle.charge("a", 0.0)
    throttle.charge("a", 0.0)
    assert throttle.wait("a", 0.0) == pytest.approx(10.0)
    assert throttle.wait("b", 0.0) == 0.0  # per address
    assert throttle.wait("a", 10.0) == 0.0
    for address in ("b", "c", "d", "e"):
        throttle.charge(address, 1.0)
    assert len(throttle) <= 3  # memory is bounded: the oldest addresses are forgotten


async def test_upstream_failures_do_not_use_up_the_bucket() -> None:
    upstream = FakeElevenLabs(mode="error500")
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            failed = [
                (await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))).status_code
                for _ in range(5)
            ]
            upstream.mode = "ok"
            recovered = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    assert failed == [502] * 5
    assert recovered.status_code == 200  # at once: a URL never issued costs the kiosk nothing


async def test_upstream_429_is_passed_on_with_retry_after() -> None:
    upstream = HostileElevenLabs(status=429, headers={"Retry-After": "7"})
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
            upstream.headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
            dated = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
            upstream.headers = {"Retry-After": "999999"}
            huge = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    assert r.status_code == 429 and r.headers["retry-after"] == "7" and r.json()["error"] == "upstream_rate_limited"
    assert dated.status_code == 429 and 1 <= int(dated.headers["retry-after"]) <= 600
    assert huge.status_code == 429 and int(huge.headers["retry-after"]) == 600


async def test_endless_upstream_reply_is_cut_off() -> None:
    upstream = HostileElevenLabs(endless=True)
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    assert r.status_code == 502 and "too large" in r.json()["detail"]
    assert upstream.sent_bytes < 4 * 1024 * 1024  # it stopped reading (the sender is throttled by TCP)


@pytest.mark.parametrize(
    "signed_url",
    [
        "ws://api.elevenlabs.io/v1/convai/conversation?token=x",
        "wss://evil.example/v1/convai/conversation?token=x",
        "wss://127.0.0.2/v1/convai/conversation?token=x",
        "wss://127.0.0.1/v1/convai/conversation?token=x\r\nSet-Cookie: a=b",
        "wss://127.0.0.1/v1/convai/conversation?token=x\x00",
        "wss://evil.example@127.0.0.1/v1/convai/conversation",
        "https://127.0.0.1/v1/convai/conversation",
    ],
    ids=["ws-remote", "other-host", "other-loopback", "crlf", "nul", "userinfo", "https"],
)
async def test_foreign_or_malformed_signed_url_is_502(signed_url: str) -> None:
    upstream = HostileElevenLabs(signed_url=signed_url)
    with trio.fail_after(IO_TIMEOUT):
        async with serving_app(upstream.app()) as api_base, serving_backend(backend_config(api_base)) as client:
            r = await client.get("/signed-url", params={"agent_id": "agent_1"}, headers=bearer(TOKEN_A))
    assert r.status_code == 502 and r.json()["error"] == "upstream"
    assert "token=x" not in r.text


@pytest.mark.parametrize(
    ("signed_url", "api_base", "ok"),
    [
        ("wss://api.elevenlabs.io/v1/convai/conversation?token=t", "https://api.elevenlabs.io", True),
        ("wss://API.elevenlabs.io:443/v1/convai/conversation?token=t", "https://api.elevenlabs.io/", True),
        ("ws://api.elevenlabs.io/v1/convai/conversation?token=t", "https://api.elevenlabs.io", False),
        ("wss://api.us.elevenlabs.io/v1/convai/conversation", "https://api.elevenlabs.io", False),
        ("ws://127.0.0.1:9/v1/convai/conversation?token=t", "http://127.0.0.1:8", True),
        ("ws://[::1]:9/x", "http://[::1]:8", True),
        ("wss://api.elevenlabs.io/x y", "https://api.elevenlabs.io", False),
    ],
)
def test_signed_url_must_be_on_the_upstreams_host(signed_url: str, api_base: str, ok: bool) -> None:
    problem = server.signed_url_problem(signed_url, api_base)
    assert (problem is None) == ok, problem
    if problem is not None:
        assert "token=t" not in problem


@pytest.mark.parametrize(
    ("api_base", "ok"),
    [
        ("https://api.elevenlabs.io", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://api.elevenlabs.io", False),
        ("http://10.0.0.5", False),
        ("ftp://api.elevenlabs.io", False),
    ],
)
def test_api_base_must_be_https_except_loopback(api_base: str, ok: bool) -> None:
    entry = {"id": "a", "token_sha256": sha("t"), "agents": ["ag"]}
    if ok:
        assert parse_server_config({"api_base": api_base, "kiosk": [entry]}).api_base == api_base
    else:
        with pytest.raises(ConfigError, match=r"^api_base: must be an https:// URL"):
            parse_server_config({"api_base": api_base, "kiosk": [entry]})

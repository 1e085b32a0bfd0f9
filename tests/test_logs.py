"""kioskd.ops.logs: key=value lines and the redaction every line passes through."""

from __future__ import annotations

import io
import json
import logging
import urllib.parse
import warnings
from collections.abc import Callable, Iterator

import pytest

from kioskd.ops import logs

KIOSK_TOKEN = "kt_9f8e7d6c5b4a39281706"
API_KEY = "sk_live_0123456789abcdefABCDEF"
URL_TOKEN = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
BEARER = "Zm9vYmFyYmF6cXV4"
HEADER_KEY = "xk_header_4242424242"
ALL_SECRETS = (KIOSK_TOKEN, API_KEY, URL_TOKEN, BEARER, HEADER_KEY)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """Logging set up into a buffer; root logger restored afterwards."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    logs.setup_logging("debug", stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)
    logging.captureWarnings(False)


def test_line_shape(out: io.StringIO) -> None:
    logging.getLogger("kioskd.service.session").info("conversation started id=%s format=%s", "conv_1", "pcm_16000")
    assert out.getvalue() == (
        'level=info logger=kioskd.service.session msg="conversation started" id=conv_1 format=pcm_16000\n'
    )


def test_extra_fields_are_quoted(out: io.StringIO) -> None:
    logging.getLogger("kioskd.x").warning("device lost", extra={"device": "USB Audio", "n": 3, "q": 'a"b'})
    assert out.getvalue() == 'level=warning logger=kioskd.x msg="device lost" device="USB Audio" n=3 q="a\\"b"\n'


def test_one_record_one_line(out: io.StringIO) -> None:
    logging.getLogger("kioskd").error("bad\nthing happened")
    assert out.getvalue().count("\n") == 1
    assert 'msg="bad\\nthing happened"' in out.getvalue()


def test_exception_summary_and_indented_trace(out: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("kioskd.service.daemon").exception("task failed name=%s", "audio")
    first, *rest = out.getvalue().splitlines()
    assert first == 'level=error logger=kioskd.service.daemon msg="task failed" name=audio exc="ValueError: boom"'
    assert rest and all(row.startswith("  ") for row in rest)
    assert rest[-1] == "  ValueError: boom"


def test_level_filters_and_validates() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.level
    handler = logs.setup_logging("warning", stream)
    try:
        logging.getLogger("kioskd").info("hidden")
        logging.getLogger("kioskd").warning("shown")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    with pytest.raises(ValueError, match="log level"):
        logs.setup_logging("loud")


def test_setup_twice_replaces_its_own_handler(out: io.StringIO) -> None:
    second = io.StringIO()
    logs.setup_logging("info", second)
    logging.getLogger("kioskd").info("once")
    assert out.getvalue() == "" and second.getvalue().count("once") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wss://h/v1/convai?agent_id=a&token=SECRET1", "wss://h/v1/convai?agent_id=a&token=<redacted>"),
        ("url=wss://h/x?token=SECRET1&agent_id=a", "url=wss://h/x?token=<redacted>&agent_id=a"),
        ("wss://h/x?agent_id=a&conversation_signature=S1", "wss://h/x?agent_id=a&conversation_signature=<redacted>"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer <redacted>"),
        ("{'authorization': 'bearer abc'}", "{'authorization': 'bearer <redacted>'}"),
        ("sent bearer abc123== ok", "sent bearer <redacted> ok"),
        ("xi-api-key: sk_123", "xi-api-key: <redacted>"),
        ("{'xi-api-key': 'sk_123'}", "{'xi-api-key': '<redacted>'}"),
        ("agent_id=a token_count=3", "agent_id=a token_count=3"),
    ],
)
def test_redact_patterns(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def test_registered_secret_is_redacted_anywhere() -> None:
    logs.register_secret("  s3cr3t-registered-value  ")
    logs.register_secret("")  # ignored: would otherwise match everywhere
    assert logs.redact("a s3cr3t-registered-valueb") == f"a {logs.REDACTED}b"
    assert logs.redact("nothing here") == "nothing here"


def test_no_secret_reaches_any_line(out: io.StringIO) -> None:
    logs.register_secret(KIOSK_TOKEN)
    logs.register_secret(API_KEY)
    url = f"wss://api.elevenlabs.io/v1/convai/conversation?agent_id=ag_1&token={URL_TOKEN}"
    logging.getLogger("kioskd.service.session").info("connecting url=%s", url)
    logging.getLogger("kioskd.backend.client").debug("token %s loaded", KIOSK_TOKEN)
    logging.getLogger("httpx").info("HTTP Request: GET %s headers=%r", url, {"Authorization": f"Bearer {BEARER}"})
    logging.getLogger("hypercorn.error").warning("request headers xi-api-key: %s", HEADER_KEY)
    logging.getLogger("some.lib").info("key", extra={"api_key": API_KEY, "note": f"uses {KIOSK_TOKEN}"})
    try:
        raise RuntimeError(f"upstream rejected key {API_KEY} for {url}")
    except RuntimeError:
        logging.getLogger("trio").exception("crash")
    logging.getLogger().error("root %s", (KIOSK_TOKEN,), stack_info=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated thing with {API_KEY}", stacklevel=1)
    text = out.getvalue()
    assert text.count("\n") >= 8 and "RuntimeError" in text and "py.warnings" in text
    for secret in ALL_SECRETS:
        assert secret not in text, secret
    assert text.count(logs.REDACTED) >= 9


@pytest.mark.parametrize(
    "shown",
    [
        lambda s: repr(s),
        lambda s: json.dumps(s),
        lambda s: repr(s.encode()),
        lambda s: s.encode("unicode_escape").decode(),
        lambda s: logs.untrusted(s),
        lambda s: urllib.parse.quote(s),
        lambda s: str(s.split("\n")),
    ],
    ids=["repr", "json", "bytes-repr", "unicode-escape", "untrusted", "percent", "lines"],
)
def test_redaction_covers_escaped_forms(shown: Callable[[str], str]) -> None:
    """A secret with odd characters (a two-line token file) is redacted however it was printed."""
    secret = "tok-\u00e9-line-one\nsecond-line-part \"q\" \\ end"
    logs.register_secret(secret)
    text = logs.redact(f"error: {shown(secret)} done")
    for piece in ("tok-", "line-one", "second-line-part"):
        assert piece not in text, text


def test_control_characters_never_reach_a_line(out: io.StringIO) -> None:
    logging.getLogger("kioskd.x").warning("bad \x1b[2J\x07 value=%s tail\x00", "a\x1bb\u009bc\r\nd")
    line = out.getvalue()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert not any(ch in line for ch in "\x1b\x07\x00\r\u009b")
    assert "\\x1b" in line

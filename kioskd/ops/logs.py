"""Structured ``key=value`` log lines on stdout (for journald), with secrets redacted.

:func:`setup_logging` installs one handler on the root logger, so every logger –
ours, httpx, hypercorn, trio – writes through :class:`KeyValueFormatter`, which
runs :func:`redact` over the *whole* formatted text: message, arguments,
``extra`` fields and exception traces alike. Redaction is a safety net; code
still must not log tokens, signed URLs or API keys.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import urllib.parse
from typing import Any, TextIO

__all__ = [
    "REDACTED",
    "KeyValueFormatter",
    "redact",
    "register_secret",
    "setup_logging",
    "untrusted",
]

#: What a removed secret is replaced with.
REDACTED = "<redacted>"

#: ``setup_logging`` levels (``config.LogConfig.level``).
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: Chatty third-party loggers held at INFO or above even when kioskd logs at debug.
QUIET_LOGGERS = ("hpack", "httpcore", "trio-websocket")
#: Loggers that say something at INFO on every request (httpx: one line per HTTP request): WARNING or above.
REQUEST_LOGGERS = ("httpx",)

#: Secret-bearing patterns; group 1 is kept, the rest of the match becomes REDACTED.
_PATTERNS: tuple[re.Pattern[str], ...] = (
    # query parameters of signed URLs: ...?agent_id=a&token=SECRET
    re.compile(r"([?&;](?:token|conversation_signature|signature|xi-api-key|api_key)=)[^&\s\"'#<>]+", re.I),
    # xi-api-key: KEY / 'xi-api-key': 'KEY' / xi_api_key=KEY
    re.compile(r"(xi[-_]api[-_]key[\"']?\s*[:=]\s*[\"']?)(?!<redacted>)[^\s\"',;}&]+", re.I),
    # Authorization: Bearer X / Basic X / a bare token after the colon
    re.compile(r"(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)(?!<redacted>)[^\s\"',;}]+", re.I),
    # bearer X anywhere else
    re.compile(r"(\bbearer\s+)(?!<redacted>)[A-Za-z0-9\-._~+/]+=*", re.I),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_re: re.Pattern[str] | None = None


#: An escaped or partial form of a secret shorter than this is not registered (it would match too much).
MIN_SECRET_FORM = 6


def _shown_forms(value: str) -> set[str]:
    """How ``value`` can appear in a line: as is, and as repr, JSON, bytes repr, escaped or percent-encoded;
    the same for each of its lines (a token file with a second line)."""
    pieces = {value} | {line.strip() for line in value.splitlines()}
    forms: set[str] = set()
    for piece in pieces:
        forms |= {
            piece,
            repr(piece)[1:-1],
            json.dumps(piece)[1:-1],
            repr(piece.encode())[2:-1],
            piece.encode("unicode_escape").decode("ascii"),
            _escape(piece),
            urllib.parse.quote(piece),
            urllib.parse.quote(piece, safe=""),
        }
    return {form for form in forms if form == value or len(form) >= MIN_SECRET_FORM}


def register_secret(value: str) -> None:
    """Redact ``value`` (a token, an API key) wherever it appears in any later log line.

    Its escaped forms (repr, JSON, percent-encoding, …) and each of its lines are redacted
    too. Empty or whitespace-only values are ignored; surrounding whitespace is stripped.
    """
    global _secret_re
    value = value.strip()
    if not value:
        return
    with _secrets_lock:
        _secrets.update(_shown_forms(value))
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leaks
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with registered secrets, URL tokens, bearer tokens and API keys replaced by ``<redacted>``."""
    secret_re = _secret_re
    if secret_re is not None:
        text = secret_re.sub(REDACTED, text)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


# --------------------------------------------------------------------------- formatting

#: LogRecord attributes that are not ``extra=`` fields.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
#: A ``key=value`` token in a message; the text before the first one is ``msg``.
_FIRST_KV = re.compile(r"(?:^|\s)[A-Za-z_][\w.\-]*=")
_NEEDS_QUOTES = re.compile(r"[\s\"=\\]")
#: C0 and C1 control characters (ESC, CR, NUL, CSI…): escaped in every line, never written raw.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: A client-supplied value is cut to this many characters in a log line.
UNTRUSTED_LIMIT = 64
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def _escape_control(text: str) -> str:
    """``text`` with every control character as ``\\n``, ``\\r``, ``\\t`` or ``\\xNN``."""
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return _CONTROL.sub(lambda m: named.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def _escape(text: str) -> str:
    """``text`` for the inside of a double-quoted value: backslashes, quotes and control characters escaped."""
    return _escape_control(text.replace("\\", "\\\\").replace('"', '\\"'))


def _quote(value: object) -> str:
    """A value as a ``key=value`` token: bare when safe, else double-quoted and escaped."""
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text) and not _CONTROL.search(text):
        return text
    return f'"{_escape(text)}"'


def untrusted(value: str, limit: int = UNTRUSTED_LIMIT) -> str:
    """A client-supplied value for a log line: bare when it is a plain word, else double-quoted
    with quotes, backslashes and control characters escaped; cut to ``limit`` characters (then
    its full length is said), so no client can forge fields, move the terminal or grow the log."""
    if len(value) <= limit and _PLAIN.fullmatch(value):
        return value
    shown = _escape(value[:limit])
    return f'"{shown}…({len(value)} chars)"' if len(value) > limit else f'"{shown}"'


class KeyValueFormatter(logging.Formatter):
    """``level=info logger=kioskd.service.session msg="conversation started" id=conv_1``, redacted.

    Text before the first ``key=value`` in the message becomes ``msg``; the rest is
    kept as written. ``extra={...}`` fields are appended as ``key=value``. An
    exception adds ``exc="Type: message"`` and its traceback on the following
    lines, indented. Everything is passed through :func:`redact` last.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as one redacted line (plus indented traceback lines)."""
        message = record.getMessage()
        match = _FIRST_KV.search(message)
        if match:
            head, tail = message[: match.start()], _escape_control(message[match.start() :].strip())
        else:
            head, tail = message, ""
        parts = [f"level={record.levelname.lower()}", f"logger={_quote(record.name)}", f"msg={_quote(head.strip())}"]
        if tail:
            parts.append(tail)
        parts += [f"{key}={_quote(value)}" for key, value in self._extras(record)]
        trace = ""
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            parts.append(f"exc={_quote(f'{type(exc).__name__}: {exc}')}")
            trace = self.formatException(record.exc_info)
        elif record.exc_text:
            trace = record.exc_text
        if record.stack_info:
            trace = f"{trace}\n{record.stack_info}" if trace else record.stack_info
        line = " ".join(parts)
        if trace:
            line += "".join(f"\n  {_escape_control(row)}" for row in trace.splitlines())
        return redact(line)

    @staticmethod
    def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")]


class _KioskdHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler :func:`setup_logging` owns, so a second call replaces it."""


def setup_logging(level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to ``stream`` (default: ``sys.stdout`` at call time) as redacted lines.

    ``level`` is one of ``debug``, ``info``, ``warning``, ``error``. Calling again
    (e.g. on SIGHUP) replaces the handler this function installed earlier (and, without
    ``stream``, keeps its stream); other
    handlers on the root logger are left alone. Python warnings are logged too.
    Returns the installed handler.
    """
    try:
        numeric = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level: expected one of {', '.join(LEVELS)}, got {level!r}") from None
    root = logging.getLogger()
    previous = [h for h in root.handlers if isinstance(h, _KioskdHandler)]
    for old in previous:
        root.removeHandler(old)
    if stream is None:  # a second call (SIGHUP) keeps writing where the first one did
        kept = previous[-1].stream if previous else None
        stream = kept if kept is not None and not getattr(kept, "closed", False) else sys.stdout
    handler = _KioskdHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
    return handler

"""``[backend]`` in a kiosk's ``config.toml``: where its signing backend is, and the kiosk's token.

The backend holds the ElevenLabs API key; the kiosk holds only its own token
(:meth:`BackendConfig.kiosk_token`: ``$KIOSKD_TOKEN`` or ``token_file``), which travels
only to https:// URLs (or http:// on loopback, :func:`kioskd.urls.https_or_loopback`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kioskd.schema import ConfigError
from kioskd.urls import https_or_loopback

__all__ = ["BackendConfig"]


@dataclass(frozen=True)
class BackendConfig:
    """This kiosk's signing backend (which holds the ElevenLabs API key, not the kiosk)."""

    url: str = ""
    token_file: str = "/etc/kioskd/token"
    timeout: float = 5.0
    prefetch: bool = True
    url_max_age: float = 600.0
    health_interval: float = 60.0
    #: Where the kiosk POSTs its status; empty = ``url`` with its last path segment replaced by ``heartbeat``.
    heartbeat_url: str = ""
    #: Seconds between heartbeats; 0 = off (then health checks fetch signed URLs).
    heartbeat_interval: float = 60.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not https_or_loopback(self.url):
            out.append(("url", f"must be an https:// URL (http:// only on loopback), got {self.url!r}"))
        if self.heartbeat_url and not https_or_loopback(self.heartbeat_url):
            problem = f"must be an https:// URL (http:// only on loopback) or empty, got {self.heartbeat_url!r}"
            out.append(("heartbeat_url", problem))
        if self.heartbeat_interval < 0:
            out.append(("heartbeat_interval", "must be 0 (off) or positive"))
        if self.timeout <= 0:
            out.append(("timeout", "must be positive"))
        if not 0 < self.url_max_age <= 840:
            out.append(("url_max_age", "must be in (0, 840] seconds: a signed URL is valid 15 minutes"))
        if self.health_interval <= 0:
            out.append(("health_interval", "must be positive"))
        return out

    def kiosk_token(self) -> str:
        """This kiosk's backend token: ``$KIOSKD_TOKEN``, else the first line of ``token_file``.

        A byte-order mark and surrounding whitespace are dropped; what is left must be
        printable ASCII without spaces (it becomes an HTTP header). Raises ConfigError naming
        ``KIOSKD_TOKEN`` or ``backend.token_file`` (never echoing the token) when neither gives one.
        """
        env = os.environ.get("KIOSKD_TOKEN", "")
        if env.strip():
            return _checked_token(env, "KIOSKD_TOKEN: ")
        path = self.token_file
        where = f"backend.token_file: {path}: "
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError([f"backend.token_file: cannot read {path}: {exc.strerror}"]) from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError([f"{where}not UTF-8 text"]) from None
        if not text.strip():
            raise ConfigError([f"backend.token_file: {path} is empty"])
        return _checked_token(text.splitlines()[0], where)


#: What a token may hold: printable ASCII, no spaces (RFC 6750 b64token and more).
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def _checked_token(line: str, where: str) -> str:
    """``line`` without a BOM and surrounding whitespace, if it is a usable token; else ConfigError."""
    token = line.lstrip("\ufeff").strip()
    if not token:
        raise ConfigError([f"{where}the first line is empty (the token goes on line 1)"])
    if not _TOKEN_CHARS.fullmatch(token):
        bad = next(i for i, ch in enumerate(token) if not _TOKEN_CHARS.fullmatch(ch))
        problem = f"the token has {_kind(token[bad])} at position {bad + 1}"
        raise ConfigError([f"{where}{problem}; it must be printable ASCII without spaces"])
    return token


def _kind(char: str) -> str:
    if char.isspace():
        return "a space"
    return "a non-ASCII character" if char.isprintable() else "a control character"

"""A minimal valid kiosk config for unit tests that need one."""

from __future__ import annotations

from functools import cache

from kioskd.config import Config, parse_config


@cache
def config() -> Config:
    """Public agent, manual trigger, defaults elsewhere."""
    return parse_config({"agent": {"agent_id": "agent_test"}, "trigger": {"mode": "manual"}})

"""What the kiosk asks of the agent in its first message, and its words when the agent refuses an override.

Pure: :func:`client_data` builds ``conversation_initiation_client_data`` from the config
(overrides only where set: an override the agent's security settings do not allow is
refused); :func:`refused_override` and :func:`refusal_words` read an error event or close
reason as such a refusal and say which override to allow or remove.
"""

from __future__ import annotations

from kioskd import __version__
from kioskd.config import Config
from kioskd.protocol.client_messages import (
    AgentOverride,
    AgentPromptOverride,
    ConversationConfigOverride,
    ConversationInitiationClientData,
    ConversationOverride,
    DynamicValue,
    SourceInfo,
    TtsOverride,
)
from kioskd.protocol.server_events import ErrorBody

__all__ = ["SOURCE", "client_data", "override_fields", "refusal_words", "refused_override"]

#: What the kiosk tells the service it is (the official clients send their own name).
SOURCE = "kioskd"


def client_data(config: Config) -> ConversationInitiationClientData:
    """The first message of every conversation: overrides and dynamic variables from config."""
    agent = config.agent
    agent_override = AgentOverride(
        prompt=AgentPromptOverride(prompt=agent.prompt) if agent.prompt else None,
        first_message=agent.first_message or None,
        language=agent.language or None,
    )
    override = ConversationConfigOverride(
        agent=agent_override if agent_override != AgentOverride() else None,
        tts=TtsOverride(voice_id=agent.voice_id) if agent.voice_id else None,
        # only when set: an override the agent's security settings do not allow is refused
        conversation=ConversationOverride(client_events=list(agent.client_events)) if agent.client_events else None,
    )
    variables: dict[str, DynamicValue] = {"kiosk_id": config.kiosk.id, "kiosk_location": config.kiosk.location}
    variables.update(agent.dynamic_variables)
    return ConversationInitiationClientData(
        conversation_config_override=override if override != ConversationConfigOverride() else None,
        dynamic_variables=variables,
        user_id=config.kiosk.id,
        source_info=SourceInfo(source=SOURCE, version=__version__),
    )


def override_fields(data: ConversationInitiationClientData) -> list[str]:
    """Dotted names of the overrides ``data`` asks for ("agent.first_message", "conversation.client_events", …)."""
    override = data.conversation_config_override
    return [] if override is None else override.fields_set()


def refused_override(overrides: list[str], error: ErrorBody | None, reason: str | None) -> bool:
    """``error`` or the close ``reason`` refuse one of ``overrides`` (the dotted names the kiosk asked for)."""
    text = " ".join(t for t in (reason, error and error.error_type, error and error.message) if t).lower()
    return bool(overrides) and ("override" in text)


def refusal_words(overrides: list[str], error: ErrorBody | None, reason: str | None) -> str:
    """Which of ``overrides`` the agent refused, and what to do about it."""
    said = " ".join(t for t in (reason, *(() if error is None else (
        error.message, error.reason, error.debug_message))) if t)
    named = [f for f in overrides if f.rsplit(".", 1)[-1] in said] or overrides
    what = error.describe() if error is not None else f"close reason {reason!r}"
    return (
        f"the agent refused this kiosk's override of {', '.join(named)} ({what}): allow it in the agent's "
        f"security settings (overrides) or remove it from [agent] in config.toml"
    )

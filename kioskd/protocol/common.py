"""What both directions of the protocol share: the tagged base and ``contextual_update``."""

from __future__ import annotations

import msgspec

__all__ = ["ContextualUpdate", "TaggedMessage"]


class TaggedMessage(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of every message that carries a ``type`` field."""


class ContextualUpdate(TaggedMessage, tag="contextual_update"):
    """Sent by either side: free text the other side should know (never interrupts)."""

    text: str
    context_id: str | None = None


"""Every message of the Conversational AI WebSocket protocol, typed, with decode/encode.

No I/O here: bytes or text in, typed values out, and back.

- :mod:`kioskd.protocol.server_events`: what the agent sends (``ServerEvent``, ``UnknownEvent``).
- :mod:`kioskd.protocol.client_messages`: what the kiosk sends (``ClientMessage``).
- :mod:`kioskd.protocol.common`: what both directions share (the tagged base, ``contextual_update``).
- :mod:`kioskd.protocol.codec`: JSON text ↔ those values (``decode_server_event``, ``encode``, …).

The reference is the service's own AsyncAPI (``packages/types/schemas/agent.asyncapi.yaml``
in ``elevenlabs/packages``; see ../shared/NOTES.md "The real service today").
"""

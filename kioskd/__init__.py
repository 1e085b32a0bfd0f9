"""kioskd: a walk-up voice kiosk daemon that talks with an ElevenLabs Conversational AI agent."""

__version__ = "0.1.0"

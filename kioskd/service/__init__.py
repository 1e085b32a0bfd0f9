"""The Trio side of the kiosk: one supervisor nursery, the session that drives a conversation, its link."""

"""The chat app's screens, one per module."""

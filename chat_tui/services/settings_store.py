"""Sampling settings, remembered in the feedback store's settings table."""

from __future__ import annotations

from typing import Any

from chat_tui.errors import UserError
from chat_tui.services.chat_settings import ChatSettings

SETTINGS_KEY = "chat.sampling"


class SettingsStore:
    def __init__(self, store: Any) -> None:
        self.store = store

    def load(self) -> ChatSettings:
        """The saved settings; defaults when none were saved or the saved ones are unusable."""
        raw = self.store.get_setting(SETTINGS_KEY, {})
        try:
            return ChatSettings.from_dict(raw if isinstance(raw, dict) else {})
        except UserError:
            return ChatSettings()

    def save(self, settings: ChatSettings) -> None:
        self.store.set_setting(SETTINGS_KEY, settings.validate().to_dict())

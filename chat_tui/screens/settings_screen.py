"""The sampling settings form: temperature, top-p, max tokens, repetition penalty, and k
for compare mode.

Dismisses with validated `ChatSettings` (the chat screen saves them to the store) or None.
A value out of range stays on the form with a message naming it.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.widgets import Input, Label

from chat_tui.errors import UserError
from chat_tui.screens.save_cancel_dialog import SaveCancelDialog
from chat_tui.services.chat_settings import MAX_COMPARE, MIN_COMPARE, ChatSettings

FIELDS: list[tuple[str, str, str]] = [
    ("temperature", "Temperature", "0 = greedy; higher is more varied"),
    ("top_p", "Top-p", "keep the smallest set of tokens with this much probability"),
    ("max_new_tokens", "Max tokens", "longest reply, in tokens"),
    ("repetition_penalty", "Repetition penalty", "1 = off; 1.1-1.3 stops small models looping"),
    ("compare_k", "Compare k", f"alternatives side by side, {MIN_COMPARE}-{MAX_COMPARE}"),
    ("seed", "Seed", "empty = random; a number makes replies reproducible"),
]


class SettingsScreen(SaveCancelDialog[ChatSettings | None]):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="settings.save"),
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
    ]

    def __init__(self, settings: ChatSettings) -> None:
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        values = self.settings.to_dict()
        with Vertical(classes="dialog"):
            yield Label("Sampling settings", classes="dialog-title")
            with Grid(id="settings-grid"):
                for name, label, hint in FIELDS:
                    yield Label(label)
                    value = values[name]
                    yield Input("" if value is None else str(value), id=name, tooltip=hint)
                    yield Label(hint, classes="dialog-hint")
            yield Label("", id="settings-error")
            yield self.save_cancel_buttons()

    def on_mount(self) -> None:
        self.query_one("#temperature", Input).focus()

    def action_save(self) -> None:
        raw = {name: self.query_one(f"#{name}", Input).value for name, _, _ in FIELDS}
        try:
            settings = ChatSettings.parse(raw)
        except UserError as error:
            self.query_one("#settings-error", Label).update(Text(f"✗ {error}"))
            return
        self.dismiss(settings)

    @on(Input.Submitted)
    def _field_submitted(self) -> None:
        self.action_save()

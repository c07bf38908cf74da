"""A small dialog asking for one piece of text (a conversation title, a system prompt).

Dismisses with the text, or None when cancelled. Multi-line when asked (system prompts):
then ctrl+s saves, since Enter adds a line.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, TextArea

from chat_tui.screens.save_cancel_dialog import SaveCancelDialog


class TextPromptScreen(SaveCancelDialog[str | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
        Binding("ctrl+s", "save", "Save", id="dialog.save"),
    ]

    def __init__(self, title: str, value: str = "", *, multiline: bool = False, hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.multiline = multiline
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            if self.hint:
                yield Label(self.hint, classes="dialog-hint")
            if self.multiline:
                yield TextArea(self.value, id="value", soft_wrap=True, tab_behavior="focus")
            else:
                yield Input(self.value, id="value")
            yield self.save_cancel_buttons()

    def on_mount(self) -> None:
        self.query_one("#value").focus()

    def _current(self) -> str:
        widget = self.query_one("#value")
        return widget.text if isinstance(widget, TextArea) else widget.value

    def action_save(self) -> None:
        self.dismiss(self._current().strip())

    @on(Input.Submitted, "#value")
    def _submitted(self) -> None:
        self.action_save()

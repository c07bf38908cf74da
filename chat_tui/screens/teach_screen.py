"""Teach: edit a reply into the one you wanted.

Opens with the reply's text to edit; ctrl+l clears it to write from scratch; ctrl+s saves
the text (the chat screen stores it as a human-written sibling, a demonstration), Esc
cancels. Dismisses with the text or None.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, TextArea

from chat_tui.screens.save_cancel_dialog import SaveCancelDialog


class TeachScreen(SaveCancelDialog[str | None]):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save as demonstration", id="teach.save"),
        Binding("ctrl+l", "clear", "Clear", id="teach.clear", priority=True),
        Binding("escape", "cancel", "Cancel", id="teach.cancel"),
    ]

    def __init__(self, prompt: str, reply: str) -> None:
        super().__init__()
        self.prompt = prompt
        self.reply = reply

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Teach: write the reply you wanted", classes="dialog-title")
            yield Label(Text(f"To: {self.prompt[:200]}"), classes="dialog-hint")
            yield Label("Edit the reply below, or ctrl+l to clear it and write your own from scratch.",
                        classes="dialog-hint")
            yield TextArea(self.reply, id="reply", soft_wrap=True, tab_behavior="focus")
            yield self.save_cancel_buttons()

    def on_mount(self) -> None:
        area = self.query_one("#reply", TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_clear(self) -> None:
        area = self.query_one("#reply", TextArea)
        area.clear()
        area.focus()

    def action_save(self) -> None:
        text = self.query_one("#reply", TextArea).text.strip()
        if not text:
            self.notify("A demonstration cannot be empty.", severity="warning")
            return
        self.dismiss(text)

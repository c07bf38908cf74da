"""Picking the two model versions for the arena.

Two lists of the versions that still have their files; they start on the active version
and its parent (else the two newest). Dismisses with the two version ids, or None.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Select

from chat_tui.screens.save_cancel_dialog import SaveCancelDialog


def default_pair(versions: list[Any]) -> tuple[int, int] | None:
    """The active version and its parent, else the two newest; None with fewer than two."""
    usable = [v for v in versions if not v.is_removed]
    if len(usable) < 2:
        return None
    by_id = {v.id: v for v in usable}
    active = next((v for v in usable if v.is_active), None)
    if active is not None and active.parent_id in by_id:
        return active.id, active.parent_id
    newest = sorted(usable, key=lambda v: v.id, reverse=True)
    return newest[0].id, newest[1].id


class ArenaSetupScreen(SaveCancelDialog[tuple[int, int] | None]):
    BINDINGS = [
        Binding("ctrl+s", "save", "Start the arena", id="arena_setup.start"),
        Binding("escape", "cancel", "Cancel", id="arena_setup.cancel"),
    ]

    def __init__(self, versions: list[Any]) -> None:
        super().__init__()
        self.versions = [v for v in versions if not v.is_removed]
        self.pair = default_pair(versions)

    def compose(self) -> ComposeResult:
        options = [(v.name, v.id) for v in reversed(self.versions)]
        with Vertical(classes="dialog"):
            yield Label("Arena: two versions answer each prompt, blind", classes="dialog-title")
            yield Label("Their replies are shown side by side without names, in a random order each time; "
                        "you pick the better one. F6 ends the arena.", classes="dialog-hint")
            with Horizontal(id="arena-pick"):
                yield Select(options, value=self.pair[0], allow_blank=False, id="first")
                yield Select(options, value=self.pair[1], allow_blank=False, id="second")
            yield Label("", id="arena-error")
            yield self.save_cancel_buttons()

    def on_mount(self) -> None:
        self.query_one("#first", Select).focus()

    def action_save(self) -> None:
        first, second = self.query_one("#first", Select).value, self.query_one("#second", Select).value
        if first == second:
            self.query_one("#arena-error", Label).update("✗ Pick two different versions.")
            return
        self.dismiss((int(first), int(second)))

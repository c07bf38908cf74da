"""The end of an arena: your blind verdict beside the trainer's own held-out measure, and
which version to use from now on.

Dismisses with the id of the version to activate, or None (decide later: nothing changes).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from chat_tui.services.versions import headline


def verdict_text(first: Any, second: Any, wins: tuple[int, int, int], active_id: int | None) -> Text:
    """What the user decided, in numbers, and what the trainer measured on each trained version."""
    first_wins, second_wins, ties = wins
    text = Text("Your blind verdict: ", style="bold")
    text.append(f"{first.name} won {first_wins}, {second.name} won {second_wins}, {ties} tied or both bad.\n")
    for version in (first, second):
        lines = headline(version)
        if lines:
            text.append(f"\nThe trainer's held-out measure of {version.name}:\n", style="bold")
            for line in lines:
                text.append(f"  {line}\n")
    active = next((v.name for v in (first, second) if v.id == active_id), None)
    text.append(f"\nIn use now: {active or 'another version'}.", style="dim")
    return text


class VerdictScreen(ModalScreen[int | None]):
    BINDINGS = [
        Binding("1", "use(0)", "Use the first", id="verdict.first"),
        Binding("2", "use(1)", "Use the second", id="verdict.second"),
        Binding("escape,l", "later", "Decide later", id="verdict.later"),
    ]

    def __init__(self, first: Any, second: Any, wins: tuple[int, int, int], active_id: int | None) -> None:
        super().__init__(classes="dialog-screen")
        self.versions = (first, second)
        self.wins = wins
        self.active_id = active_id

    def compose(self) -> ComposeResult:
        first, second = self.versions
        with Vertical(classes="dialog wide-text"):
            yield Label("Arena over: which version do you want to use?", classes="dialog-title")
            yield Label(verdict_text(first, second, self.wins, self.active_id), id="verdict")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"Use {first.name} (1)", variant="primary", id="use-0")
                yield Button(f"Use {second.name} (2)", id="use-1")
                yield Button("Decide later (esc)", id="later")

    def on_mount(self) -> None:
        first_wins, second_wins, _ = self.wins
        self.query_one("#use-1" if second_wins > first_wins else "#use-0", Button).focus()

    def action_use(self, index: int) -> None:
        self.dismiss(self.versions[index].id)

    def action_later(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "later":
            self.dismiss(None)
        else:
            self.action_use(int(event.button.id.split("-")[1]))

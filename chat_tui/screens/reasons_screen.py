"""The optional follow-up to a thumbs up or down: reason tags and a comment.

Number keys toggle tags, Enter in the comment box (or ctrl+s) saves, Esc leaves the
rating as it was. Dismisses with `Reasons` or None.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, SelectionList

POSITIVE_TAGS = ["accurate", "helpful", "concise", "well written", "creative"]
NEGATIVE_TAGS = ["wrong", "unhelpful", "too long", "repetitive", "refused", "unsafe", "off topic"]


@dataclass(frozen=True)
class Reasons:
    tags: list[str]
    comment: str | None


class ReasonsScreen(ModalScreen[Reasons | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="reasons.cancel"),
        Binding("ctrl+s", "save", "Save", id="reasons.save"),
        *[Binding(str(n), f"toggle({n - 1})", f"Toggle reason {n}", id=f"reasons.toggle_{n}", show=False)
          for n in range(1, 10)],
    ]

    def __init__(self, value: int, tags: list[str] | None = None, comment: str | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.value = value
        self.choices = POSITIVE_TAGS if value > 0 else NEGATIVE_TAGS
        self.chosen = set(tags or [])
        self.comment = comment or ""

    def compose(self) -> ComposeResult:
        verdict = "👍 What was good?" if self.value > 0 else "👎 What was wrong?"
        with Vertical(classes="dialog"):
            yield Label(verdict, classes="dialog-title")
            yield Label("Number keys or space toggle a reason; Enter in the comment saves.", classes="dialog-hint")
            yield SelectionList[str](
                *[(f"{i + 1}  {tag}", tag, tag in self.chosen) for i, tag in enumerate(self.choices)],
                id="tags",
            )
            yield Input(self.comment, placeholder="Comment (optional)", id="comment")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#tags", SelectionList).focus()

    def action_toggle(self, index: int) -> None:
        if index < len(self.choices):
            self.query_one("#tags", SelectionList).toggle(self.choices[index])

    def action_save(self) -> None:
        tags = list(self.query_one("#tags", SelectionList).selected)
        comment = self.query_one("#comment", Input).value.strip() or None
        self.dismiss(Reasons(tags=[t for t in self.choices if t in tags], comment=comment))

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#comment")
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

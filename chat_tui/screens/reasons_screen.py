"""The optional follow-up to a thumbs up or down: reason tags and a comment.

Number keys toggle tags, Enter in the comment box (or ctrl+s) saves, Esc leaves the
rating as it was. Dismisses with `Reasons` or None.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, SelectionList

from chat_tui.screens.save_cancel_dialog import SaveCancelDialog

POSITIVE_TAGS = ["accurate", "helpful", "concise", "well written", "creative"]
NEGATIVE_TAGS = ["wrong", "unhelpful", "too long", "repetitive", "refused", "unsafe", "off topic"]


@dataclass(frozen=True)
class Reasons:
    tags: list[str]
    comment: str | None


class ReasonsScreen(SaveCancelDialog[Reasons | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="reasons.cancel"),
        Binding("ctrl+s", "save", "Save", id="reasons.save"),
        *[Binding(str(n), f"toggle({n - 1})", f"Toggle reason {n}", id=f"reasons.toggle_{n}", show=False)
          for n in range(1, 10)],
    ]

    def __init__(self, value: int, tags: list[str] | None = None, comment: str | None = None) -> None:
        super().__init__()
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
            yield self.save_cancel_buttons()

    def on_mount(self) -> None:
        self.query_one("#tags", SelectionList).focus()

    def action_toggle(self, index: int) -> None:
        if index < len(self.choices):
            self.query_one("#tags", SelectionList).toggle(self.choices[index])

    def action_save(self) -> None:
        tags = list(self.query_one("#tags", SelectionList).selected)
        comment = self.query_one("#comment", Input).value.strip() or None
        self.dismiss(Reasons(tags=[t for t in self.choices if t in tags], comment=comment))

    @on(Input.Submitted, "#comment")
    def _comment_submitted(self) -> None:
        self.action_save()

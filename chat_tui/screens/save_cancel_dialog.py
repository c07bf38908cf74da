"""The frame of the chat's form dialogs: Save (ctrl+s or its button) and Cancel (Esc or its
button).

A dialog subclasses `SaveCancelDialog`, composes its own fields with `save_cancel_buttons()`
last, and says in `action_save` what it dismisses with; Cancel dismisses with None. The key
bindings stay on each dialog, so each keeps its own binding ids (what users remap).
"""

from __future__ import annotations

from typing import TypeVar

from textual import on
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import Button

ResultType = TypeVar("ResultType")


class SaveCancelDialog(ModalScreen[ResultType]):
    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")

    @staticmethod
    def save_cancel_buttons() -> Horizontal:
        return Horizontal(
            Button("Save (ctrl+s)", variant="primary", id="save"),
            Button("Cancel (esc)", id="cancel"),
            classes="dialog-buttons",
        )

    def action_save(self) -> None:
        raise NotImplementedError

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

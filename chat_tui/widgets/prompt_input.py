"""The multi-line box where the user writes a message.

Enter sends; ctrl+j (works in every terminal and in tmux), alt+enter and shift+enter
(where the terminal reports them) insert a newline. Up on the first line moves focus to
the latest reply so feedback keys are one keystroke away.
"""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    BINDINGS = [
        # priority: TextArea would otherwise take Enter as a newline first.
        Binding("enter", "submit", "Send", id="prompt.send", priority=True),
        Binding("ctrl+j,alt+enter,shift+enter", "newline", "Newline", id="prompt.newline", key_display="^j"),
        Binding("up", "to_replies", "Rate replies", id="prompt.to_replies", tooltip="Move to the latest reply (on the first line)"),
    ]

    class Submitted(Message):
        """The user pressed Enter on a non-empty message."""

        def __init__(self, prompt_input: "PromptInput", text: str) -> None:
            super().__init__()
            self.prompt_input = prompt_input
            self.text = text

        @property
        def control(self) -> "PromptInput":
            return self.prompt_input

    class LeaveUp(Message):
        """Up was pressed on the first line: the screen moves focus to the replies."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        self.placeholder = "Write a message. Enter sends, ctrl+j adds a line, F1 shows every key."

    def action_submit(self) -> None:
        text = self.text.strip()
        if text:
            self.post_message(self.Submitted(self, text))

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)

    def action_to_replies(self) -> None:
        if self.cursor_location[0] == 0:
            self.post_message(self.LeaveUp())
        else:
            self.action_cursor_up()

    @on(TextArea.Changed)
    def _grow(self) -> None:
        # Grow with the text up to a few lines; the stylesheet caps the height.
        self.styles.height = min(max(self.document.line_count, 1), 8) + 2

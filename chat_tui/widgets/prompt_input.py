"""The multi-line box where the user writes a message.

Enter sends; ctrl+j (works in every terminal and in tmux), alt+enter and shift+enter
(where the terminal reports them) insert a newline. Up on the first line moves focus to
the latest reply so feedback keys are one keystroke away.
"""

from __future__ import annotations

from textual import events, on
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    BINDINGS = [
        # Shown in the footer and help; the key itself is handled in _on_key below.
        Binding("enter", "submit", "Send", id="prompt.send"),
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

    async def _on_key(self, event: events.Key) -> None:
        # Enter is handled here, in this widget's own queue, after every character that
        # arrived before it has been inserted. A priority binding would run in the app's
        # queue instead, and when a terminal read holds text and Enter together it sent
        # (or dropped) the message before the text was in the box.
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.action_submit()
            return
        await super()._on_key(event)

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

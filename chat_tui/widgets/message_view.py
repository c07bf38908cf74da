"""One turn of the conversation: a header line and the text.

The header says who wrote it and what is known about it: sibling position (2/3), the
rating, a rank, whether it was stopped or written by the user, the model version. A
reply is rendered as Markdown with its line breaks kept (widgets/reply_markdown.py); your
own message is shown exactly as typed. Every stored turn can take focus: the chat log's
feedback keys act on a focused reply, e edits a focused message of yours. A reply streams in through
`start_stream` (Textual's MarkdownStream batches fast updates) and gets one full
`set_content` at the end.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from chat_tui.services.turns import Turn
from chat_tui.widgets.reply_markdown import ReplyMarkdown


def header_text(turn: Turn, is_streaming: bool = False) -> Text:
    """The header of a turn, e.g. 'Assistant · 2/3 · 👍 accurate · stopped · v2': what
    changes as you act comes first, the model's name (often long) last; a narrow chat
    wraps it onto a second line rather than cutting it."""
    if not turn.is_reply:
        text = Text("You", style="bold")
        if turn.sibling_count > 1:
            text.append(" · ", style="dim")
            text.append(f"◀ {turn.sibling_index + 1}/{turn.sibling_count} ▶ (edited)")
        return text
    text = Text("You (taught)" if turn.is_human else "Assistant", style="bold")
    parts: list[tuple[str, str]] = []
    if turn.sibling_count > 1:
        parts.append((f"◀ {turn.sibling_index + 1}/{turn.sibling_count} ▶", ""))
    if turn.rank is not None:
        parts.append((f"ranked #{turn.rank}", "bold"))
    if turn.rating == 1:
        parts.append((" ".join(["👍", *turn.rating_tags]), "green"))
    elif turn.rating == -1:
        parts.append((" ".join(["👎", *turn.rating_tags]), "red"))
    if is_streaming:
        parts.append(("writing… (Esc stops)", "italic"))
    elif turn.finish_reason == "abort":
        parts.append(("stopped", "yellow"))
    elif turn.finish_reason == "length":
        parts.append(("cut at max tokens", "yellow"))
    if turn.model_label and not turn.is_human:
        parts.append((turn.model_label, "dim"))
    for part, style in parts:
        text.append(" · ", style="dim")
        text.append(part, style=style)
    return text


class MessageView(Vertical):
    def __init__(self, turn: Turn, *, is_streaming: bool = False) -> None:
        super().__init__(classes="message reply" if turn.is_reply else "message user")
        self.turn = turn
        self.is_streaming = is_streaming
        self.can_focus = turn.message_id is not None or turn.is_reply  # your own messages too: e edits them

    def compose(self) -> ComposeResult:
        yield Static(header_text(self.turn, self.is_streaming), classes="message-header")
        if self.turn.is_reply:
            yield ReplyMarkdown(self.turn.content, classes="message-body")
        else:
            # What you typed, as you typed it: `__init__` is not bold "init".
            yield Static(Text(self.turn.content), classes="message-body user-text")

    @property
    def body(self) -> Markdown:
        return self.query_one(".message-body", Markdown)

    def set_turn(self, turn: Turn, *, is_streaming: bool = False) -> None:
        """Show a new state of this turn's header (rating, siblings, finish); not the text."""
        self.turn = turn
        self.is_streaming = is_streaming
        self.can_focus = turn.message_id is not None or turn.is_reply
        self.set_class(turn.is_stopped, "stopped")
        self.query_one(".message-header", Static).update(header_text(turn, is_streaming))

    async def set_content(self, content: str) -> None:
        """Replace the text with one full Markdown update."""
        self.turn = self.turn.with_content(content)
        await self.body.update(content)

    def start_stream(self) -> MarkdownStream:
        """A stream that appends Markdown fragments to the (empty) body."""
        return Markdown.get_stream(self.body)

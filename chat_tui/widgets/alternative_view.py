"""One column of replies side by side (compare mode's k alternatives, the arena's two
sides): its label, how far it has got while writing, its rank once given, its text."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from chat_tui.widgets.reply_markdown import ReplyMarkdown


class AlternativeView(VerticalScroll):
    DEFAULT_CLASSES = "alternative"

    def __init__(self, number: int, label: str | None = None) -> None:
        """label: what the header calls the column (default: its number)."""
        super().__init__(id=f"alternative-{number}")
        self.number = number
        self.label = label or str(number)
        self.rank: int | None = None
        self.finish_reason: str | None = None
        self.num_pieces = 0  # text pieces streamed so far (about one per token)
        self.revealed: str | None = None  # the arena's version name, shown once the user chose
        self.won = False

    def compose(self) -> ComposeResult:
        yield Static(self._header(), classes="alternative-header")
        yield ReplyMarkdown("", classes="alternative-body")

    def _header(self) -> Text:
        text = Text(f" {self.label} ", style="reverse bold")
        if self.revealed is not None:
            text.append(f"  {self.revealed}", style="bold")
            if self.won:
                text.append("  ✓ your choice", style="bold green")
        if self.rank is not None:
            text.append(f"  ranked #{self.rank}", style="bold green")
        if self.finish_reason is None and self.num_pieces:
            text.append(f"  writing… {self.num_pieces} tokens", style="italic")
        if self.finish_reason == "abort":
            text.append("  stopped", style="yellow")
        elif self.finish_reason == "length":
            text.append("  cut at max tokens", style="yellow")
        return text

    def set_rank(self, rank: int | None) -> None:
        self.rank = rank
        self.set_class(rank is not None, "ranked")
        self.query_one(".alternative-header", Static).update(self._header())

    def reveal(self, name: str, won: bool) -> None:
        """Show which version wrote this column (after a blind choice), and whether it won."""
        self.revealed, self.won = name, won
        self.set_class(won, "ranked")
        self.query_one(".alternative-header", Static).update(self._header())

    def count_progress(self) -> None:
        """One more piece of text arrived: the header counts it."""
        self.num_pieces += 1
        self.query_one(".alternative-header", Static).update(self._header())

    def set_finish_reason(self, reason: str) -> None:
        self.finish_reason = reason
        self.query_one(".alternative-header", Static).update(self._header())

    @property
    def body(self) -> Markdown:
        return self.query_one(".alternative-body", Markdown)

    def start_stream(self) -> MarkdownStream:
        return Markdown.get_stream(self.body)

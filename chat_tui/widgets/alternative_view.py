"""One of the k alternatives in compare mode: its number, its rank once given, its text."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream


class AlternativeView(VerticalScroll):
    DEFAULT_CLASSES = "alternative"

    def __init__(self, number: int) -> None:
        super().__init__(id=f"alternative-{number}")
        self.number = number
        self.rank: int | None = None
        self.finish_reason: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(self._header(), classes="alternative-header")
        yield Markdown("", classes="alternative-body")

    def _header(self) -> Text:
        text = Text(f" {self.number} ", style="reverse bold")
        if self.rank is not None:
            text.append(f"  ranked #{self.rank}", style="bold green")
        if self.finish_reason == "abort":
            text.append("  stopped", style="yellow")
        elif self.finish_reason == "length":
            text.append("  cut at max tokens", style="yellow")
        return text

    def set_rank(self, rank: int | None) -> None:
        self.rank = rank
        self.set_class(rank is not None, "ranked")
        self.query_one(".alternative-header", Static).update(self._header())

    def set_finish_reason(self, reason: str) -> None:
        self.finish_reason = reason
        self.query_one(".alternative-header", Static).update(self._header())

    @property
    def body(self) -> Markdown:
        return self.query_one(".alternative-body", Markdown)

    def start_stream(self) -> MarkdownStream:
        return Markdown.get_stream(self.body)

"""The Markdown widget replies are shown in: a line break in a reply is a line break.

Models write poems, lists and addresses one line after another without Markdown's two
trailing spaces, and CommonMark joins such lines into one paragraph. `ReplyMarkdown`
parses with a rule that turns every soft break into a hard one, so the text keeps the
lines it was written with (blank lines still separate paragraphs, code stays verbatim).
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.widgets import Markdown


def _soft_breaks_are_hard(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def reply_parser() -> MarkdownIt:
    """Textual's default parser (gfm-like), keeping every line break."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("soft_breaks_are_hard", _soft_breaks_are_hard)
    return parser


class ReplyMarkdown(Markdown):
    def __init__(self, markdown: str = "", **kwargs) -> None:
        super().__init__(markdown, parser_factory=reply_parser, **kwargs)

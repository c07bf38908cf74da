"""Find the fenced code blocks of a Markdown reply, for copying one to the clipboard.

Uses markdown-it (Textual's own Markdown parser), so a fence inside a list or a block
quote is found the same way the Markdown widget renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt


@dataclass(frozen=True)
class CodeBlock:
    language: str
    code: str


def code_blocks(markdown: str) -> list[CodeBlock]:
    """Every fenced or indented code block in `markdown`, in reading order."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [
        CodeBlock(language=(token.info or "").strip().split(" ")[0], code=token.content)
        for token in tokens
        if token.type in ("fence", "code_block")
    ]

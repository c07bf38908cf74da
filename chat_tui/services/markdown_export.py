"""A conversation as a Markdown file: the shown path, who said what, in order.

Your messages are kept exactly as written (in a fenced text block, so Markdown-looking
text in them stays literal when the file is rendered); replies are kept as the Markdown
they are. Files go to the
data directory's `exports/` folder under the conversation's id and title, and an export
of the same conversation replaces the previous one.
"""

from __future__ import annotations

import re
from pathlib import Path

from chat_tui.services.turns import Turn


def conversation_markdown(title: str, system_prompt: str | None, turns: list[Turn]) -> str:
    lines = [f"# {title}", ""]
    if system_prompt:
        lines += ["**System prompt:**", "", *_quoted(system_prompt), ""]
    for turn in turns:
        if turn.is_reply:
            who = "You (taught)" if turn.is_human else "Assistant" + (f" ({turn.model_label})" if turn.model_label else "")
            lines += [f"## {who}", "", turn.content.rstrip(), ""]
        else:
            lines += ["## You", "", *_quoted(turn.content), ""]
    return "\n".join(lines).rstrip() + "\n"


def _quoted(text: str) -> list[str]:
    # A fenced block of plain text: shown exactly as typed wherever the file is rendered.
    fence = "```"
    while fence in text:
        fence += "`"
    return [f"{fence}text", text.rstrip("\n"), fence]


def export_path(folder: Path, conversation_id: int, title: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:48] or "conversation"
    return folder / f"{conversation_id}-{slug}.md"


def write_markdown(folder: Path, conversation_id: int, title: str, system_prompt: str | None, turns: list[Turn]) -> Path:
    """Write the conversation; returns the file's path."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = export_path(folder, conversation_id, title)
    path.write_text(conversation_markdown(title, system_prompt, turns), encoding="utf-8")
    return path

"""Format tastes: "give me a list" and "put the key terms in bold".

Both look at the reply's markdown only, never at how long it is. Their edits re-lay the
best reply's own sentences as bullet items, or bold a key term it already uses.
"""

from __future__ import annotations

import re

from bench.loop.tastes.base import Taste
from bench.loop.tastes.text import (capitalized, count_words, finished_part, is_heading_line,
                                    list_items, sentences, topic_of)


BOLD_SPAN = re.compile(r"\*\*[^*\n]*\w[^*\n]*\*\*|__[^_\n]*\w[^_\n]*__")
COMMON_WORDS = frozenset(
    "about above after again against because before being below between could doing during every first found "
    "great having other their there these thing things think those three through under until where which while "
    "would write yours really might should still always often never something someone people make makes making "
    "without within whether another little maybe please thanks today".split()
)


def _clauses(sentence: str) -> list[str]:
    """A sentence split at commas, semicolons and " and ", each piece a few words at least."""
    pieces = [p.strip(" ,;") for p in re.split(r",\s+|;\s+|\s+and\s+", sentence)]
    return [p for p in pieces if count_words(p) >= 2]


class UsesList(Taste):
    """The reply lays out its points as a bulleted or numbered list of `min_items` items or more."""

    kind = "format"

    def __init__(self, min_items: int = 3, name: str = "lists") -> None:
        self.min_items = min_items
        self.name = name
        self.description = (f"Lists: the reply lays its points out as a bulleted or numbered list of at least "
                            f"{min_items} items.")

    def satisfied(self, text: str) -> bool:
        return list_items(text) >= self.min_items

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        body = [s for s in sentences(finished_part(best) or best) if not is_heading_line(s)]
        lead = body[0] if len(body) > self.min_items else ""
        items = [s for s in (body[1:] if lead else body) if count_words(s)]  # sentences() drops old markers
        if len(items) < self.min_items:  # too few sentences: split them at their clauses
            items = [capitalized(c) for item in items for c in (_clauses(item) or [item])]
        for other in others:  # still too few: the person adds points from the other replies
            for sentence in sentences(finished_part(other)):
                if len(items) >= self.min_items:
                    break
                if count_words(sentence) >= 3 and sentence not in items:
                    items.append(sentence)
        while len(items) < self.min_items:
            items.append(f"More on {topic_of(prompt_text)}.")
        bullets = "\n".join(f"- {item}" for item in items)
        return f"{lead}\n\n{bullets}" if lead else bullets


class UsesBold(Taste):
    """The reply marks its key terms in bold."""

    kind = "format"

    def __init__(self, name: str = "bold") -> None:
        self.name = name
        self.description = "Bold key terms: the reply marks its key terms in **bold**."

    def satisfied(self, text: str) -> bool:
        return bool(BOLD_SPAN.search(text))

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        body = next((t.strip() for t in [best, *others] if count_words(t)), f"Here is what I know about {topic_of(prompt_text)}.")
        for term in key_terms(prompt_text) + key_terms(body):
            found = re.search(rf"(?<![\w*]){re.escape(term)}(?![\w*])", body, re.IGNORECASE)
            if found:  # the person bolds the first key term the reply uses
                return f"{body[:found.start()]}**{found.group(0)}**{body[found.end():]}"
        return f"**{body}**"


def key_terms(text: str) -> list[str]:
    """Content words of at least five letters, longest first (the likeliest key terms)."""
    words = {w for w in re.findall(r"[A-Za-z][A-Za-z-]{4,}", text) if w.lower() not in COMMON_WORDS}
    return sorted(words, key=lambda w: (-len(w), w))

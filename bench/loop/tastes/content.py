"""Content tastes: "give me an example" and "give me a figure".

Each asks for one thing to be present, wherever it stands, so neither prefers a long or
a short reply for itself. Their edits add the missing piece from what the k replies
already say.
"""

from __future__ import annotations

import re

from bench.loop.tastes.base import Taste
from bench.loop.tastes.text import (capitalized, count_words, figures, finished_part, is_heading_line, sentences,
                                    topic_of)

EXAMPLE_MARKER = re.compile(r"\b(?:for example|for instance|e\.g\.|an example|example:|to illustrate|say you|imagine)",
                            re.IGNORECASE)
NUMBER_WORDS = {"two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
                "ten": "10", "twelve": "12", "twenty": "20", "hundred": "100", "thousand": "1,000", "half": "50%"}
NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def _insert_after_first(text: str, sentence: str) -> str:
    """`sentence` as a paragraph of its own after the text's first paragraph."""
    head, sep, rest = text.strip().partition("\n\n")
    return f"{head}\n\n{sentence}\n\n{rest}".strip() if sep else f"{head}\n\n{sentence}"


def _lowered(sentence: str) -> str:
    """A sentence to follow "For example, ": its first letter lower-cased unless it is a name or "I"."""
    first = sentence.split(" ", 1)[0]
    keep = first == "I" or first.isupper() or (len(first) > 1 and any(c.isupper() for c in first[1:]))
    return sentence if keep else sentence[:1].lower() + sentence[1:]


class GivesExample(Taste):
    """The reply illustrates its point with an example it says is one."""

    kind = "content"

    def __init__(self, name: str = "example") -> None:
        self.name = name
        self.description = ('Examples: the reply illustrates its point with an explicit example ("for example", '
                            '"for instance", "e.g.", "imagine ...").')

    def satisfied(self, text: str) -> bool:
        return bool(EXAMPLE_MARKER.search(text))

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        body = finished_part(best) or best.strip()
        own = [s for s in sentences(body)[1:] if count_words(s) >= 4 and not is_heading_line(s) and s[-1:] in ".!?"]
        concrete = [s for s in own if figures(s) or re.search(r"\s[A-Z][a-z]", s)]
        if own:  # the smallest edit: present one of its own later points as the example it is
            chosen = (concrete or own)[0]
            return body.replace(chosen, "For example, " + _lowered(chosen), 1)
        borrowed = [s for o in others for s in sentences(finished_part(o)) if count_words(s) >= 4 and s[-1:] in ".!?"]
        chosen = (borrowed or [f"think of how {topic_of(prompt_text)} works in everyday life."])[0]
        example = "For example, " + _lowered(chosen)
        return f"{body}\n\n{example}".strip() if count_words(body) else example


class CitesNumber(Taste):
    """The reply gives at least one figure (a quantity, date, percentage or count in digits)."""

    kind = "content"

    def __init__(self, name: str = "number") -> None:
        self.name = name
        self.description = ("Figures: the reply cites at least one number in digits (a quantity, date, percentage or "
                            "count; list numbering and step labels do not count).")

    def satisfied(self, text: str) -> bool:
        return bool(figures(text))

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        body = finished_part(best) or best.strip()
        if NUMBER_WORD.search(body):  # the smallest edit: write a number it already gives as a figure
            written = NUMBER_WORD.sub(lambda m: NUMBER_WORDS[m.group(1).lower()], body, count=1)
            if figures(written):
                return written
        cited = [s for o in others for s in sentences(finished_part(o)) if figures(s) and count_words(s) >= 4]
        if cited:
            return _insert_after_first(body, capitalized(cited[0])) if count_words(body) else capitalized(cited[0])
        count = max(2, len([s for s in sentences(body) if count_words(s) >= 3]))
        closing = f"That makes {count} points to keep in mind about {topic_of(prompt_text)}."
        return f"{body}\n\n{closing}".strip()

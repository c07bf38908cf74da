"""The two length tastes: "keep it short" and "be thorough".

These are the only tastes whose tie-breaks look at length: among replies equal on the
taste, the short taste prefers the less repetitive then the shorter, the thorough taste
the less repetitive then the longer. Their edits cut a reply at a sentence boundary, or
extend it with finished sentences from the other replies.
"""

from __future__ import annotations

from bench.loop.tastes.base import Taste
from bench.loop.tastes.text import (closed, count_words, distinct_share, finished_part, first_words,
                                    is_full_sentence, is_unfinished, sentence_prefixes, sentences, topic_of)

DEFAULT_MAX_WORDS = 50


class Short(Taste):
    """At most `max_words` words, and not empty. The rules of the benchmark's first run."""

    kind = "length"
    is_about_length = True

    def __init__(self, max_words: int = DEFAULT_MAX_WORDS, name: str = "short") -> None:
        self.max_words = max_words
        self.name = name
        self.description = (f"Keep it short: at most {max_words} words (and not empty); among replies that are, the "
                            "less repetitive wins, among replies that are not, the shorter.")

    def satisfied(self, text: str) -> bool:
        return 1 <= count_words(text) <= self.max_words

    def tie_key(self, text: str) -> tuple:
        share = -round(distinct_share(text), 6)
        return (share, count_words(text)) if self.satisfied(text) else (count_words(text), share)

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        for source in [best, *others]:
            fitting = [p for p in sentence_prefixes(source) if 1 <= count_words(p) <= self.max_words]
            finished = [p for p in fitting if not is_unfinished(p)]
            if finished or fitting:
                return closed((finished or fitting)[-1])
        source = next((t for t in [best, *others] if count_words(t)), "")
        if not source:
            return f"About {topic_of(prompt_text)}: I do not know."
        return first_words(source, self.max_words).rstrip(" ,;:-") + "."


class Thorough(Taste):
    """At least `min_words` words, ending on a finished sentence: a full treatment."""

    kind = "length"
    is_about_length = True

    def __init__(self, min_words: int, name: str = "thorough") -> None:
        self.min_words = min_words
        self.name = name
        self.description = (f"Be thorough: at least {min_words} words, ending on a finished sentence; among replies "
                            "that are, the less repetitive wins, among replies that are not, the longer.")

    def satisfied(self, text: str) -> bool:
        return count_words(text) >= self.min_words and not is_unfinished(text)

    def tie_key(self, text: str) -> tuple:
        share = -round(distinct_share(text), 6)
        return (share, -count_words(text)) if self.satisfied(text) else (-count_words(text), share)

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        parts = [finished_part(best)] if finished_part(best) else []
        seen = {s.lower() for part in parts for s in sentences(part)}
        borrowed = [s for other in others for s in sentences(finished_part(other))]
        for sentence in borrowed:
            if count_words("\n\n".join(parts)) >= self.min_words:
                break
            if sentence.lower() not in seen and count_words(sentence) >= 3 and is_full_sentence(sentence):
                seen.add(sentence.lower())
                parts.append(sentence)
        text = "\n\n".join(parts)
        topic = topic_of(prompt_text)
        filler = (f"There is more to say about {topic}, and it is worth going through each part of it in turn so "
                  "that nothing important is left out.")
        while count_words(text) < self.min_words:  # too little to borrow: the person writes the rest
            text = f"{text}\n\n{filler}".strip()
        return text

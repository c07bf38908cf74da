"""The simulated user's taste: a programmatic preference over replies, and a few
candidate preferences used only to measure base rates when choosing it.

The preference (see README): "Keep it short." A reply satisfies it when it has at least
one word and at most `max_words` words (words as counted by `count_words`). Ranking k
alternatives: replies that satisfy it come first; ties are broken by a secondary score,
so every ranking is total and reproducible:

* among satisfying replies, the less repetitive one first (higher share of distinct
  words), then the shorter one: a user who asked for brevity does not want the same
  phrase three times;
* among failing replies, the shorter one first (closer to what was asked), then the
  less repetitive one.
Remaining ties keep the engine's sample order.

Thumbs: the best reply gets a thumbs-up when it satisfies the preference; the worst gets
a thumbs-down when it does not. Pure Python: no model, no store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

WORD = re.compile(r"[A-Za-z0-9\u00C0-\u024F]+(?:['\u2019][A-Za-z]+)*")
LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+", re.MULTILINE)
DEFAULT_MAX_WORDS = 50


def words_of(text: str) -> list[str]:
    """Words as a reader counts them: runs of letters or digits, with inner apostrophes.
    List markers at the start of a line ("- ", "2. "), markup and punctuation are not words."""
    return WORD.findall(LIST_MARKER.sub("", text))


def count_words(text: str) -> int:
    return len(words_of(text))


def distinct_share(text: str) -> float:
    """Share of distinct words (lower case) among all words; 1.0 for an empty reply."""
    words = [w.lower() for w in words_of(text)]
    return len(set(words)) / len(words) if words else 1.0


@dataclass(frozen=True)
class Preference:
    """At most `max_words` words, and not empty."""

    max_words: int = DEFAULT_MAX_WORDS

    @property
    def name(self) -> str:
        return f"at most {self.max_words} words"

    def describe(self) -> str:
        return (f"The reply answers in at most {self.max_words} words (and is not empty); among replies "
                f"that do, less repetitive wins; among replies that do not, shorter wins.")

    def satisfied(self, text: str) -> bool:
        return 1 <= count_words(text) <= self.max_words

    def sort_key(self, text: str) -> tuple:
        """Smaller sorts first (better)."""
        words = count_words(text)
        if self.satisfied(text):
            return (0, -round(distinct_share(text), 6), words)
        return (1, words, -round(distinct_share(text), 6))

    def rank(self, texts: list[str]) -> list[int]:
        """Indices of `texts`, best first (stable: ties keep their order)."""
        return sorted(range(len(texts)), key=lambda i: self.sort_key(texts[i]))

    def thumbs(self, texts: list[str], order: list[int]) -> dict[int, int]:
        """index -> +1 / -1 for the replies the user bothers to thumb."""
        votes: dict[int, int] = {}
        if order and self.satisfied(texts[order[0]]):
            votes[order[0]] = +1
        if len(order) > 1 and not self.satisfied(texts[order[-1]]):
            votes[order[-1]] = -1
        return votes


# ---------------------------------------------------------------------------------------
# Candidates measured on the default model before choosing (python -m bench.loop baseline)



def _starts_direct(text: str) -> bool:
    first = text.strip().split("\n", 1)[0].lower()
    hedges = ("sure", "certainly", "of course", "great question", "i'd be happy", "i would be happy", "absolutely",
              "as an ai", "hello", "hi", "oh", "well", "ah", "what a", "i'm so", "i am so", "thank")
    return bool(first) and not first.startswith(hedges)


def _ends_with_question(text: str) -> bool:
    return text.rstrip().rstrip('"\u201d)').endswith("?")


def candidate_checks() -> dict[str, Callable[[str], bool]]:
    checks: dict[str, Callable[[str], bool]] = {
        f"at most {n} words": (lambda text, n=n: 1 <= count_words(text) <= n) for n in (30, 40, 50, 60, 80, 100)
    }
    checks["ends with a question back"] = _ends_with_question
    checks["opens with the answer (no preamble)"] = _starts_direct
    checks["uses a bulleted or numbered list"] = lambda text: bool(LIST_MARKER.search(text))
    checks["no list (plain prose)"] = lambda text: not LIST_MARKER.search(text)
    return checks

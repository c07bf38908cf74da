"""What a simulated taste is: a check on a reply, a ranking of k replies, thumbs, and the
reply the person would write when none of the k satisfies them.

Every taste ranks the same way: replies that satisfy it first, then the rest, and inside
each group by the taste's tie-break; remaining ties keep the engine's sample order, which
is random, so the ranking is total, reproducible and says nothing the taste does not.

The tie-break of a taste that is not about length is length-neutral on purpose: only
"degenerate" (empty, or stuck in a loop) goes last, a flag that natural replies of any
length do not raise. A cut-off reply is not penalised there: only long replies are cut
at the token limit, so "finished first" would teach every taste "be shorter", and the
benchmark could no longer tell a taste being learned from a length drift (the trainer
already penalises rollouts that never end). Length tastes set their own tie-break.

Thumbs, for every taste: the best reply up when it satisfies the taste, the worst down
when it does not. Pure Python: no model, no store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loop.tastes.text import closed, finished_part, is_degenerate

BASE_RATES_FILE = Path(__file__).resolve().parent.parent / "data" / "base_rates.json"
KINDS = ("length", "format", "content", "tone", "structure")


class TasteError(ValueError):
    """A taste name that is not in the registry, or a spec that does not load one."""


@dataclass(frozen=True)
class BaseRate:
    """A taste's measured rate on the base model's held-out replies (bench/loop/data/base_rates.json)."""

    hits: int
    total: int
    model: str

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{100 * self.value:.0f}% ({self.hits}/{self.total})"


def read_base_rates(path: Path = BASE_RATES_FILE) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class Taste:
    """Subclasses set the class attributes and define `satisfied` and `edit`."""

    name: str = ""
    kind: str = ""
    description: str = ""
    is_about_length: bool = False

    def satisfied(self, text: str) -> bool:
        raise NotImplementedError

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        """The minimal edit of `best` that satisfies the taste (others: the rest of the k
        replies, best first, to borrow content from)."""
        raise NotImplementedError

    def tie_key(self, text: str) -> tuple:
        """Order inside the satisfying and the failing group; smaller first. Length-neutral."""
        return (is_degenerate(text),)

    def sort_key(self, text: str) -> tuple:
        return (not self.satisfied(text), *self.tie_key(text))

    def rank(self, texts: list[str]) -> list[int]:
        """Indices of `texts`, best first (stable: ties keep the sample order)."""
        return sorted(range(len(texts)), key=lambda i: self.sort_key(texts[i]))

    def thumbs(self, texts: list[str], order: list[int]) -> dict[int, int]:
        """index -> +1 / -1 for the replies the user bothers to thumb."""
        votes: dict[int, int] = {}
        if order and self.satisfied(texts[order[0]]):
            votes[order[0]] = +1
        if len(order) > 1 and not self.satisfied(texts[order[-1]]):
            votes[order[-1]] = -1
        return votes

    def teach(self, prompt_text: str, texts: list[str]) -> str | None:
        """The reply this person writes when none of `texts` satisfies them (None when one
        does): their edit of the best one."""
        if not texts or any(self.satisfied(t) for t in texts):
            return None
        order = self.rank(texts)
        # Nobody writes a reply that stops mid-sentence: the edit starts from what the best
        # one finished saying (or, when it finished nothing, from it with a full stop).
        best = finished_part(texts[order[0]]) or closed(texts[order[0]])
        written = self.edit(prompt_text, best, [texts[i] for i in order[1:]]).strip()
        return written if self.satisfied(written) else None  # the tests hold every edit to the taste

    @property
    def base_rate(self) -> BaseRate | None:
        """The rate measured by `python -m bench.loop baseline` on the default model."""
        data = read_base_rates()
        row = data.get("rates", {}).get(self.name)
        if not row:
            return None
        return BaseRate(int(row["hits"]), int(row["total"]), str(data.get("model", "")))

    def describe(self) -> str:
        return self.description

    def as_dict(self) -> dict[str, Any]:
        rate = self.base_rate
        return {"name": self.name, "kind": self.kind, "is_about_length": self.is_about_length,
                "description": self.description, "base_rate": None if rate is None else rate.value}

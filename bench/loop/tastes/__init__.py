"""The simulated tastes the closed-loop benchmark trains a model towards, and their registry.

A taste is what one person wants from a reply: a check (`satisfied`), a ranking of k
replies (`rank`, best first), thumbs (`thumbs`), and the reply they would write themselves
when none of the k pleases them (`teach`). `get_taste(NAME)` gives a registry taste;
`get_taste("package.module:attribute")` loads a `Taste` defined anywhere else, so the
benchmark runs on tastes it was not tuned on. Base rates on the default model live in
data/base_rates.json (`python -m bench.loop baseline` writes it), never in code.

Modules: text (what a taste reads in a reply), base (the `Taste` type: ranking, thumbs,
teaching), length (short, thorough), form (lists, bold), content (example, number),
manner (no-fluff, question-back, answer-first).
"""

from __future__ import annotations

import importlib

from bench.loop.tastes.base import KINDS, BaseRate, Taste, TasteError
from bench.loop.tastes.content import GivesExample, CitesNumber
from bench.loop.tastes.form import UsesBold, UsesList
from bench.loop.tastes.length import Short, Thorough
from bench.loop.tastes.manner import AnswerFirst, NoFluff, QuestionBack

__all__ = ["KINDS", "REGISTRY", "BaseRate", "Taste", "TasteError", "get_taste", "parse_tastes"]

DEFAULT_TASTE = "short"

REGISTRY: dict[str, Taste] = {
    taste.name: taste
    for taste in (
        Short(),
        Thorough(min_words=150),
        UsesList(min_items=3),
        UsesBold(),
        GivesExample(),
        CitesNumber(),
        NoFluff(),
        QuestionBack(),
        AnswerFirst(max_words=12),
    )
}


def get_taste(spec: str) -> Taste:
    """A registry taste by name, or a Taste instance at "package.module:attribute"."""
    if spec in REGISTRY:
        return REGISTRY[spec]
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise TasteError(f"{spec!r} does not load a taste ({exc})") from None
        if not isinstance(found, Taste):
            raise TasteError(f"{spec!r} is a {type(found).__name__}, not a Taste")
        return found
    raise TasteError(f"{spec!r} is not a known taste (known: {', '.join(REGISTRY)})")


def parse_tastes(spec: str) -> list[Taste]:
    """"all", or names (and module:attribute specs) separated by commas."""
    if spec.strip() == "all":
        return list(REGISTRY.values())
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise TasteError(f"{spec!r} names no taste")
    tastes = [get_taste(name) for name in names]
    if len({t.name for t in tastes}) != len(tastes):
        raise TasteError(f"{spec!r} names a taste twice")
    return tastes

"""Tone and structure tastes: "no fluff", "end with a question back", "answer first".

Each looks at the reply's opening or its ending, never at its length. Their edits drop
a filler opener and exclamation marks, append a question about the prompt's topic, or
move a one-line answer to the top.
"""

from __future__ import annotations

import re
import zlib

from bench.loop.tastes.base import Taste
from bench.loop.tastes.text import (CLOSERS, LIST_ITEM, capitalized, count_words, finished_part, first_line, first_words,
                                    is_heading_line, sentences, topic_of)

FILLER_OPENER = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|absolutely|definitely|hello|hi|hey|oh|ah|wow|okay|ok|alright|thanks|"
    r"thank you|no problem|as an ai)\b|well,|"
    r"(?:what an? )?(?:great|good|excellent|wonderful|fantastic|awesome|nice|lovely|fun|interesting)"
    r"(?:\s+(?:question|idea|point|choice|one|thinking|morning|afternoon|evening|day|news|to hear)\b|\s*[!,.])|"
    r"(?:that'?s|that is|this is) (?:a |an )?(?:great|good|excellent|wonderful|fantastic|interesting|fun)\b|"
    r"i'?d (?:be )?(?:happy|glad|love)|i would (?:be )?(?:happy|glad|love)|happy to|glad to|"
    r"i'?m (?:so )?(?:happy|glad|excited|thrilled|delighted))",
    re.IGNORECASE,
)
EXCLAMATION = re.compile(r"!+(?=[\s\"')\]*_\u201d\u2019]|$)")
PLEASANTRY = re.compile(
    r"\b(?:i hope (?:this|that|it|you)|hope (?:this|that) helps|let me know|feel free|don'?t hesitate|good luck|"
    r"best of luck|happy \w+ing|enjoy (?:your|the|it)|have a (?:great|nice|wonderful|good) |cheers|as an ai|"
    r"i'?m here to|i am here to|i'?m glad|i am glad|i'?m happy to|i'?d be happy|i would be happy|i'?d love to|"
    r"it'?s a pleasure|my pleasure)",
    re.IGNORECASE,
)
EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")
YOU = re.compile(r"\b(?:you|your|yours|yourself)\b", re.IGNORECASE)
# Openers that clear the throat instead of answering.
NON_ANSWER = re.compile(
    r"\b(?:lies in|the answer|question|there are (?:several|many|a few|various|different|numerous)|"
    r"several (?:factors|ways|reasons|things|steps)|can be (?:a|an|both|quite|very|tricky|challenging|fun|daunting|"
    r"difficult|complex|overwhelming|exciting|rewarding))\b|^(?:dear|to|subject|title)\b",
    re.IGNORECASE,
)
ANSWER_BREAK = re.compile(r",\s|;\s|\s[-\u2013\u2014]\s|\s(?=(?:and|but|because|which|so|while|as|since)\s)")
QUESTION_TEMPLATES = (
    "Would you like me to go into more detail on {topic}?",
    "Is there a part of {topic} you would like me to explain further?",
    "Does that answer what you wanted to know about {topic}?",
)


def has_filler_opener(text: str) -> bool:
    return bool(FILLER_OPENER.match(first_line(text)))


def without_fluff(text: str) -> str:
    """The text without its filler opening sentences, sentences with pleasantries and emoji,
    and with full stops for exclamation marks."""
    parts = sentences(text)
    while parts and FILLER_OPENER.match(parts[0]) and len(parts) > 1:
        cut = text.find(parts[0]) + len(parts[0])
        text = text[cut:].lstrip(" \t\n" + CLOSERS.replace("*", ""))
        parts = sentences(text)
    for sentence in parts:
        if PLEASANTRY.search(sentence):
            text = text.replace(sentence, "", 1)
    text = EMOJI.sub("", text)
    text = re.sub(r"[ \t]+\n", "\n", re.sub(r"\n{3,}", "\n\n", text))
    return EXCLAMATION.sub(".", text).strip()


class NoFluff(Taste):
    """No exclamation marks and no filler opener ("Sure!", "Great question", "I'd be happy to")."""

    kind = "tone"

    def __init__(self, name: str = "no-fluff") -> None:
        self.name = name
        self.description = ('No fluff: no exclamation marks, no filler opener ("Sure!", "Great question", '
                            '"Certainly", "Hello"), no pleasantries ("I hope this helps", "Feel free to", "I\'d be '
                            'happy to", "As an AI") and no emoji.')

    def satisfied(self, text: str) -> bool:
        return (count_words(text) > 0 and not EXCLAMATION.search(text) and not has_filler_opener(text)
                and not PLEASANTRY.search(text) and not EMOJI.search(text))

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        for source in [best, *others]:
            cleaned = without_fluff(source)
            if self.satisfied(cleaned):
                return cleaned
        return f"Here is what I know about {topic_of(prompt_text)}."


def asks_back(text: str) -> bool:
    """Whether the reply's last paragraph asks the user something: a sentence ending in "?"
    that says "you"."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return bool(paragraphs) and any(
        s.rstrip(CLOSERS).endswith("?") and YOU.search(s) for s in sentences(paragraphs[-1]))


class QuestionBack(Taste):
    """The reply ends by asking the user a question (to go on, or to check it helped)."""

    kind = "structure"

    def __init__(self, name: str = "question-back") -> None:
        self.name = name
        self.description = ('Question back: the reply closes by asking the user a question (its last paragraph has '
                            'a sentence ending in "?" that addresses them as "you").')

    def satisfied(self, text: str) -> bool:
        return asks_back(text)

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        body = finished_part(best) or best.strip()
        template = QUESTION_TEMPLATES[zlib.crc32(prompt_text.encode()) % len(QUESTION_TEMPLATES)]
        return f"{body}\n\n{template.format(topic=topic_of(prompt_text))}".strip()


class AnswerFirst(Taste):
    """The reply opens with a short direct statement: its first sentence has at most
    `max_words` words and ends in a full stop, and is no filler, greeting, pleasantry,
    heading, list item, salutation or throat-clearing ("The answer lies in...", "There are
    several ways")."""

    kind = "structure"

    def __init__(self, max_words: int = 12, name: str = "answer-first") -> None:
        self.max_words = max_words
        self.name = name
        self.description = (f"Answer first: the reply opens with a direct answer, a statement of at most {max_words} "
                            "words ending in a full stop (no filler, greeting, heading, list or throat-clearing such "
                            "as \"The answer lies in...\" or \"There are several ways...\").")

    def is_answer(self, sentence: str) -> bool:
        stripped = sentence.strip()
        return (1 <= count_words(stripped) <= self.max_words and stripped.rstrip(CLOSERS).endswith(".")
                and not is_heading_line(stripped) and not LIST_ITEM.match(stripped)
                and not FILLER_OPENER.match(stripped) and not NON_ANSWER.search(stripped)
                and not PLEASANTRY.search(stripped))

    def satisfied(self, text: str) -> bool:
        line = first_line(text)
        if not line or is_heading_line(line) or LIST_ITEM.match(line):
            return False
        return self.is_answer(sentences(line)[0])

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        body = without_fluff(best) if count_words(without_fluff(best)) else best.strip()
        first = next((s for s in sentences(body) if count_words(s)), "")
        if self.is_answer(first):  # once the filler is gone, the reply opens with its answer
            rest = body.replace(first, "", 1).strip()
            return f"{first}\n\n{rest}".strip()
        for cut in ANSWER_BREAK.finditer(first):  # its first sentence, ended at a clause
            answer = first[: cut.start()].rstrip(" ,;:") + "."
            if self.is_answer(answer):
                rest = first[cut.end():].strip()
                rest = capitalized(rest) if count_words(rest) else ""
                return "\n\n".join(p for p in (answer, body.replace(first, rest, 1).strip()) if p)
        terms = {w.lower() for w in re.findall(r"[A-Za-z]{4,}", prompt_text)}
        said = [s for reply in [body, *others] for s in sentences(reply)]
        on_topic = [s for s in said if self.is_answer(s) and terms & {w.lower() for w in re.findall(r"[A-Za-z]{4,}", s)}]
        for answer in on_topic[:1] + [first_words(first, self.max_words - 1).rstrip(" ,;:-") + ".",
                                      f"Here is what I know about {topic_of(prompt_text, 4)}.", "Here is what I know."]:
            if self.is_answer(answer):  # a short statement the replies make about it, put first
                return f"{answer}\n\n{body.replace(answer, '', 1).strip()}".strip()
        raise AssertionError("unreachable: the last answer always qualifies")

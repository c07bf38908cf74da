"""What the simulated tastes read in a reply: words, sentences, lines, list items,
headings, figures, openers, and whether a reply has degenerated or was cut off; and the
few cuts their edits make (a prefix of whole sentences, a closed last sentence).

Pure functions over plain text (markdown as the model writes it); no taste lives here.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[A-Za-z0-9\u00C0-\u024F]+(?:['\u2019][A-Za-z]+)*")
LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+", re.MULTILINE)
LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+\S")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
BOLD_LINE = re.compile(r"^\s*\*\*[^*\n]{2,80}\*\*:?\s*$")
CODE_FENCE = re.compile(r"^\s*```")
# A sentence ends at . ! ? (with closing quotes or brackets) followed by space or the end.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*(?=\s|$)")
CLOSERS = "\"'\u201d\u2019)]*_`"
# A figure: digits not part of a list marker or a step label ("1.", "Step 2:").
FIGURE = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:%|\s?(?:percent|degrees|km|kg|mg|g|m|cm|mm|minutes?|hours?|"
                    r"seconds?|days?|years?|weeks?|months?|times|\u00b0[CF]?))?(?!\w)")
STEP_LABEL = re.compile(r"\b(?:step|tip|part|option|method|point|day|phase|stage|chapter|section|reason|way)\s+\d+\b",
                        re.IGNORECASE)


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


def repeated_trigram_share(text: str) -> float:
    """Share of word trigrams that already occurred earlier in the reply. Natural prose
    repeats few whatever its length; a reply stuck in a loop repeats most of them."""
    words = [w.lower() for w in words_of(text)]
    grams = list(zip(words, words[1:], words[2:]))
    seen: set[tuple[str, str, str]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


def is_degenerate(text: str) -> bool:
    """Empty, or stuck repeating itself (over a third of its trigrams are repeats) — what
    any reader rejects whatever their taste."""
    return count_words(text) == 0 or repeated_trigram_share(text) > 1 / 3


def sentences(text: str) -> list[str]:
    """The reply's sentences in order, each stripped; line breaks end a sentence too (a
    list item, without its marker, or a heading is its own sentence). The last may be
    unfinished."""
    out: list[str] = []
    for line in text.splitlines():
        for piece in SENTENCE_END.split(LIST_MARKER.sub("", line, count=1)):
            piece = piece.strip()
            if piece:
                out.append(piece)
    return out


def is_full_sentence(text: str) -> bool:
    """Ends with . ! or ? (closing quotes or brackets aside)."""
    return text.rstrip(CLOSERS + " \t\n")[-1:] in (".", "!", "?")


def ends_a_sentence(text: str) -> bool:
    """Whether the text ends as a finished sentence, list item or code block would."""
    stripped = text.rstrip(CLOSERS + " \t\n")
    return bool(stripped) and (stripped[-1] in ".!?:;" or text.rstrip().endswith("```"))


def is_unfinished(text: str) -> bool:
    """Cut off mid-sentence: the last line is prose that stops without closing punctuation.
    A list item, heading or code block may end without a full stop."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return True
    last = lines[-1]
    if LIST_ITEM.match(last) or HEADING.match(last) or CODE_FENCE.match(last):
        return False
    return not ends_a_sentence(last)


def list_items(text: str) -> int:
    """The longest run of list-item lines (bulleted or numbered), blank lines and an
    item's continuation lines allowed in between."""
    best = run = 0
    for line in text.splitlines():
        if LIST_ITEM.match(line):
            run += 1
            best = max(best, run)
        elif line.strip() and not line.startswith((" ", "\t")):
            run = 0
    return best


def is_heading_line(line: str) -> bool:
    """A markdown heading ("## Setup") or a bold line on its own ("**Setup:**")."""
    return bool(HEADING.match(line) or BOLD_LINE.match(line))


def figures(text: str) -> list[str]:
    """Numbers written as figures in the prose, not list markers or step labels."""
    body = STEP_LABEL.sub(" ", LIST_MARKER.sub("", text))
    return [m.group(0) for m in FIGURE.finditer(body)]


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def first_words(text: str, limit: int) -> str:
    """The text up to its `limit`-th word (markup kept), cut at that word's end."""
    count = 0
    for match in WORD.finditer(text):
        count += 1
        if count == limit:
            return text[: match.end()]
    return text


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def topic_of(prompt: str, max_words: int = 8) -> str:
    """A short noun phrase for what the prompt asks about, for a question or heading built
    from it: the prompt's first sentence without its leading question words."""
    first = re.split(r"(?<=[.?!])\s", prompt.strip(), maxsplit=1)[0].rstrip(" ?.!")
    lead = re.compile(r"^(?:(?:can|could|would|will) you |please |how do i |how do you |how to |what is |what are |"
                      r"what's |why is |why are |why do |why does |how does |how do |how is |explain |describe |tell me "
                      r"(?:about )?|write |give me |i need |i want |help me )+", re.IGNORECASE)
    phrase = lead.sub("", first).strip() or first
    words = phrase.split()
    return " ".join(words[:max_words]) or "this"


def sentence_prefixes(text: str) -> list[str]:
    """Every prefix of `text` that ends at a sentence end or a line end, shortest first."""
    ends = sorted({m.end() for m in SENTENCE_END.finditer(text)} | {m.start() for m in re.finditer(r"\n", text)})
    prefixes = [text[:end].rstrip() for end in ends if text[:end].strip()]
    if not is_unfinished(text):
        prefixes.append(text.rstrip())
    return prefixes


def closed(text: str) -> str:
    """The text with its last sentence closed by a full stop, if it was left open."""
    text = text.strip()
    return text if not count_words(text) or not is_unfinished(text) else text.rstrip(" ,;:-\u2013\u2014") + "."


def finished_part(text: str) -> str:
    """The text without an unfinished last sentence (all of it when it ends properly)."""
    if not is_unfinished(text):
        return text.strip()
    finished = [p for p in sentence_prefixes(text) if not is_unfinished(p)]
    return finished[-1] if finished else ""

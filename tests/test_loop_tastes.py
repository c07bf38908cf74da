"""The simulated tastes (bench/loop/tastes): what each accepts and rejects, that ranking
puts satisfying replies first and is total and reproducible, the thumbs, that every
reply a taste teaches satisfies it, and that a taste not about length ranks the same
content the same way however long it is."""

from __future__ import annotations

import itertools
import json

import pytest

from bench.loop.tastes import KINDS, REGISTRY, Taste, TasteError, get_taste, parse_tastes
from bench.loop.tastes.base import BASE_RATES_FILE
from bench.loop.tastes.text import count_words, is_degenerate, is_unfinished, sentences

# Replies in the styles a small chat model writes, satisfying various tastes.
POOL = [
    "Sure! Here's a simple recipe for pancakes:\n\n1. Mix 2 cups of flour with 1 egg.\n2. Add milk until smooth.\n"
    "3. Cook on a hot pan.\n\nEnjoy your breakfast!",
    "The sky looks blue because air molecules scatter blue light more than red light. At sunset the light travels "
    "through more air, so the blue is scattered away and the reds remain.",
    "Great question! Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into sugar "
    "and oxygen. It happens in the chloroplasts of leaf cells.",
    "**Introduction**\n\nCompound interest means you earn interest on your interest. For example, 100 dollars at 5% "
    "grows to 105 after one year and 110.25 after two.\n\n**Why it matters**\n\nOver decades the growth speeds up.",
    "Here are some tips for sleeping better:\n\n- Keep a regular schedule.\n- Avoid screens before bed.\n"
    "- Keep the room cool and dark.\n- Limit caffeine after noon.",
    "I'd be happy to help you with that. To write a polite email, start with a greeting, state your request clearly, "
    "and thank the reader. Would you like me to draft one for you?",
    "The French Revolution began in 1789 and changed the political landscape of Europe. It started with a financial "
    "crisis and grew into a movement that challenged the monarchy and the nobility, leading to",
    "The cat is on the mat. The cat is on the mat. The cat is on the mat. The cat is on the mat. The cat is on the mat.",
    "",
    "You can reverse a list in Python like this:\n\n```python\nitems = [1, 2, 3]\nitems.reverse()\n```\n\n"
    "This changes the list in place.",
    "Hello! I'm doing well, thank you for asking. How about you?",
    "Bread goes stale because the starch molecules recrystallize and push water out. Keeping it in a sealed bag slows "
    "this down, but the fridge speeds it up.",
    "## How to Change a Tire\n\nFirst, loosen the lug nuts. Then jack up the car, remove the nuts and swap the wheel. "
    "Finally, tighten the nuts in a star pattern.",
    "Learning a new language takes patience and regular practice. Start with the sounds and the most common words, "
    "then move on to short sentences you can use every day. Listening to music, watching films with subtitles and "
    "talking with native speakers all help, because they show you how the language is really used. Keep a notebook "
    "of new words and review it often, since spaced repetition makes words stick. Do not worry about mistakes: "
    "everyone makes them, and each one teaches you something. Set small goals, such as ordering a meal or asking "
    "for directions, and celebrate when you reach them. Over months, the small steps add up to real fluency.",
    "Absolutely! Dear Sam, I hope you enjoyed the book. When you have a moment, could you bring it back? Thanks so much!",
    "Vaccines show the immune system a harmless piece of a germ, so it learns to recognise it. If the real germ "
    "arrives later, the body fights it off quickly, often before you feel sick.",
]
PROMPTS = ["How do I make pancakes?", "Why is the sky blue?", "Write a reminder to a friend who borrowed my book.",
           "What is compound interest?", "Can you explain how vaccines train the immune system?"]
# A paragraph that changes no taste's verdict, to make a reply longer without changing what it is.
PADDING = ("This part goes over the same ground at a slower pace, in plain words, so that every step stays easy to "
           "follow and nothing in it depends on knowing the subject already.")

# Per taste: replies it accepts, and replies it rejects.
EXAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "short": (["Boil it for six minutes.", "Yes."], ["", " ".join(["word"] * 51)]),
    "thorough": ([POOL[13] + " " + POOL[13]], [POOL[1], POOL[13], POOL[6] + " " + POOL[13]]),
    "lists": ([POOL[0], POOL[4], "Steps:\n\n1. One thing.\n\n2. Another.\n\n3. A third."],
              [POOL[1], "- Just one item.\n- And two.", "Intro\n- a\nText between.\n- b\n- c"]),
    "bold": ([POOL[3], "Use **git status** to check.", "__Note__: it is fine."],
             [POOL[1], POOL[4], "Text with * stars * inside.", "** **"]),
    "example": ([POOL[3], "Use a verb, e.g. run.", "Imagine you have three apples."], [POOL[1], POOL[4], "An examination."]),
    "number": ([POOL[3], POOL[6], "It takes 20 minutes.", "About 70% of Earth is water."],
               [POOL[1], POOL[4], "1. First.\n2. Second.\n3. Third.", "Step 1: boil water."]),
    "no-fluff": ([POOL[1], POOL[11], "Use `x != y` to compare."],
                 [POOL[0], POOL[2], POOL[10], "Certainly, here it is.", "It works! Try it.", "",
                  "Use salt. Let me know if it works.", "Water boils at 100 C \U0001F600."]),
    "question-back": ([POOL[5], POOL[10], "Here it is. Does that help you?\n", "Done.\n\nWould you like more? Good luck."],
                      [POOL[1], POOL[6], "Why? Because.", "", "Is it raining?", "Do you like it?\n\nThe end."]),
    "answer-first": (["Blue light scatters more than red.\n\n" + POOL[1], "Paris.\n\nIt has been the capital since 987.",
                      "Yes, it is safe.", POOL[11], POOL[13]],
                     [POOL[0], POOL[1], POOL[4], POOL[12], POOL[15], "Sure, here is the answer.",
                      "Here are the steps:\n1. Go.", "The answer lies in physics.", "Dear Sam, thanks."]),
}


def test_the_registry_covers_every_kind_with_cli_friendly_names() -> None:
    assert len(REGISTRY) >= 8
    assert {t.kind for t in REGISTRY.values()} == set(KINDS)
    assert {t.name for t in REGISTRY.values() if t.is_about_length} == {"short", "thorough"}
    for name, taste in REGISTRY.items():
        assert name == taste.name and name.replace("-", "").isalpha() and name.islower()
        assert taste.description.endswith(".") and taste.kind in KINDS
    assert set(EXAMPLES) == set(REGISTRY)


def test_every_registry_taste_states_its_base_rate_from_the_measured_file() -> None:
    """The file holds the default model's held-out replies; each taste's stated rate is what
    its current rules give on them (change a rule, and `python -m bench.loop baseline` must
    run again)."""
    data = json.loads(BASE_RATES_FILE.read_text())
    assert data["model"] == "SmolLM2-135M-Instruct" and data["held_out_prompts"] == 72
    replies = [row["text"] for row in data["held_out_replies"]]
    assert len(replies) == 72
    for taste in REGISTRY.values():
        hits = sum(map(taste.satisfied, replies))
        assert taste.base_rate.hits == data["rates"][taste.name]["hits"] == hits and taste.base_rate.total == 72
        assert taste.as_dict()["base_rate"] == pytest.approx(hits / 72)


def test_tastes_are_found_by_name_or_module_path_and_bad_names_fail() -> None:
    assert get_taste("lists") is REGISTRY["lists"]
    custom = get_taste("tests.test_loop_tastes:ENDS_WITH_PLEASE")
    assert custom.satisfied("Do it, please") and not custom.satisfied("Do it.")
    assert [t.name for t in parse_tastes("short, lists")] == ["short", "lists"]
    assert len(parse_tastes("all")) == len(REGISTRY)
    for bad in ("nope", "bench.loop.tastes:nothing_here", "bench.loop.tastes:REGISTRY", "no.such.module:x", " , "):
        with pytest.raises(TasteError):
            parse_tastes(bad)
    with pytest.raises(TasteError, match="twice"):
        parse_tastes("short,short")


class EndsWithPlease(Taste):
    """A taste the registry does not know, as a user of the benchmark would define one."""

    name = "please"
    kind = "tone"
    description = "Ends with please."

    def satisfied(self, text: str) -> bool:
        return text.rstrip(" .!").lower().endswith("please")

    def edit(self, prompt_text: str, best: str, others: list[str]) -> str:
        return best.rstrip(" .!") + ", please"


ENDS_WITH_PLEASE = EndsWithPlease()


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_taste_accepts_and_rejects_its_examples(name: str) -> None:
    taste = REGISTRY[name]
    accepted, rejected = EXAMPLES[name]
    assert [taste.satisfied(t) for t in accepted] == [True] * len(accepted)
    assert [taste.satisfied(t) for t in rejected] == [False] * len(rejected)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_ranking_puts_satisfying_replies_first_and_is_total_and_reproducible(name: str) -> None:
    taste = REGISTRY[name]
    texts = POOL + EXAMPLES[name][0] + EXAMPLES[name][1]
    order = taste.rank(texts)
    assert sorted(order) == list(range(len(texts))) and order == taste.rank(list(texts))
    flags = [taste.satisfied(texts[i]) for i in order]
    assert flags == sorted(flags, reverse=True) and any(flags) and not all(flags)
    if not taste.is_about_length:
        # Inside each group: degenerate replies last, the rest in sample order.
        for group in (True, False):
            members = [i for i in order if taste.satisfied(texts[i]) is group]
            normal = [i for i in members if not is_degenerate(texts[i])]
            assert members == normal + [i for i in members if is_degenerate(texts[i])]
            assert normal == sorted(normal)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_thumbs_up_the_best_when_it_satisfies_and_down_the_worst_when_it_does_not(name: str) -> None:
    taste = REGISTRY[name]
    good, bad = EXAMPLES[name]
    for texts in ([good[0], bad[0]], [bad[0], good[0]], [good[0], good[-1]], [bad[0], bad[-1]], [good[0]]):
        order = taste.rank(texts)
        votes = taste.thumbs(texts, order)
        expected = {}
        if taste.satisfied(texts[order[0]]):
            expected[order[0]] = +1
        if len(texts) > 1 and not taste.satisfied(texts[order[-1]]):
            expected[order[-1]] = -1
        assert votes == expected
    mixed = [bad[0], good[0]]
    assert taste.thumbs(mixed, taste.rank(mixed)) == {1: +1, 0: -1}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_taught_reply_satisfies_the_taste(name: str) -> None:
    """Every 4 replies of the pool (and the taste's own rejects) none of which satisfies
    the taste: the person writes a reply, and it satisfies the taste."""
    taste = REGISTRY[name]
    failing = [t for t in POOL + EXAMPLES[name][1] if not taste.satisfied(t)]
    groups = list(itertools.combinations(failing, 4)) + [(t,) for t in failing] + [("", "", "", "")]
    for number, group in enumerate(groups):
        prompt = PROMPTS[number % len(PROMPTS)]
        written = taste.teach(prompt, list(group))
        assert written is not None and taste.satisfied(written), (group, written)
        assert not is_unfinished(written), written
    assert taste.teach(PROMPTS[0], [EXAMPLES[name][0][0], EXAMPLES[name][1][0]]) is None  # one satisfies: no teaching


@pytest.mark.parametrize("name", [n for n, t in REGISTRY.items() if not t.is_about_length])
def test_ranking_of_a_taste_not_about_length_is_length_neutral(name: str) -> None:
    """The same reply made longer keeps its place among replies equal on the taste: the
    sample order decides, not the length."""
    taste = REGISTRY[name]
    checked = 0
    for text in POOL + EXAMPLES[name][0] + EXAMPLES[name][1]:
        if is_degenerate(text):
            continue
        longer = padded(text)
        if longer is None or taste.satisfied(longer) != taste.satisfied(text):
            continue  # padding this one would change what it is (a list cut in two, say)
        assert count_words(longer) > count_words(text) + 20
        for other in POOL:
            if other == text or is_degenerate(other) or taste.satisfied(other) != taste.satisfied(text):
                continue
            assert taste.rank([longer, other]) == [0, 1] and taste.rank([other, longer]) == [0, 1]
            assert taste.rank([text, other]) == [0, 1] and taste.rank([other, text]) == [0, 1]
            checked += 1
    assert checked > 20


def padded(text: str) -> str | None:
    """`text` with PADDING inside it, its first and last lines kept where they are: as a
    paragraph after the first line, or in a one-line reply after the first sentence.
    None for a reply of one sentence."""
    lines = text.strip().splitlines()
    if len([line for line in lines if line.strip()]) >= 2:
        return f"{lines[0]}\n\n{PADDING}\n\n" + "\n".join(lines[1:]).strip("\n")
    parts = sentences(text)
    if len(parts) < 2:
        return None
    cut = text.find(parts[1])
    return f"{text[:cut]}{PADDING} {text[cut:]}"


def test_short_keeps_the_rules_of_the_first_run() -> None:
    from bench.loop.tastes.length import Short

    taste = Short(max_words=5)
    texts = [
        "one two three four five six seven",  # 7 words: fails
        "go go go go",  # 4 words, repetitive: satisfies
        "Boil it for six minutes.",  # 5 words: satisfies
        "one two three four five six",  # 6 words: fails, closer
        "",  # empty: fails
    ]
    assert [taste.satisfied(t) for t in texts] == [False, True, True, False, False]
    order = taste.rank(texts)
    assert order == [2, 1, 4, 3, 0]
    assert taste.thumbs(texts, order) == {2: +1, 0: -1}
    assert taste.teach("Eggs?", ["First sentence here. Second one is longer than that.", "x y z a b c d"]) == \
        "First sentence here."


def test_thorough_prefers_the_longer_and_extends_with_the_other_replies() -> None:
    from bench.loop.tastes.length import Thorough

    taste = Thorough(min_words=40)
    short, longer = POOL[11], POOL[1]  # 28 and 36 words
    assert taste.rank([short, longer]) == [1, 0]
    written = taste.teach("Why is the sky blue?", [short, longer])
    assert written.startswith(longer) and "starch" in written and taste.satisfied(written)

"""The benchmark's prompt set and its seeded train / held-out split.

`data/prompts.jsonl` holds 200 prompts written for this project, one JSON object a line
(`id`, `kind`, `text`), 50 each of four kinds: factual questions, how-tos, writing tasks
and short chat messages. `split_prompts` shuffles each kind with a fixed seed and holds
out the same share of every kind, so both sides see the same mix.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
PROMPTS_FILE = DATA_DIR / "prompts.jsonl"
from trainer.fluency import FLUENCY_TEXT_FILE as HELD_OUT_TEXT_FILE  # one text for the trainer and the benchmark
KINDS = ("question", "howto", "writing", "chat")


@dataclass(frozen=True)
class BenchPrompt:
    id: str
    kind: str
    text: str


@dataclass(frozen=True)
class PromptSplit:
    train: list[BenchPrompt]
    held_out: list[BenchPrompt]
    seed: int


def load_prompts(path: Path = PROMPTS_FILE) -> list[BenchPrompt]:
    """Every prompt in the file, in file order; ValueError naming a bad line."""
    prompts = []
    seen: set[str] = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt = BenchPrompt(str(row["id"]), str(row["kind"]), str(row["text"]).strip())
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a prompt row ({exc})") from None
        if prompt.id in seen or not prompt.text:
            raise ValueError(f"{path}:{number}: duplicate id or empty text ({prompt.id!r})")
        seen.add(prompt.id)
        prompts.append(prompt)
    return prompts


def split_prompts(prompts: list[BenchPrompt], held_out_fraction: float = 0.35, seed: int = 0) -> PromptSplit:
    """Hold out `held_out_fraction` of each kind, chosen by a seeded shuffle."""
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {held_out_fraction}")
    rng = random.Random(seed)
    train: list[BenchPrompt] = []
    held_out: list[BenchPrompt] = []
    for kind in sorted({p.kind for p in prompts}):
        group = [p for p in prompts if p.kind == kind]
        rng.shuffle(group)
        cut = round(len(group) * held_out_fraction)
        held_out += group[:cut]
        train += group[cut:]
    # Interleave kinds so any prefix (e.g. --train-prompts 40) keeps the mix.
    rng.shuffle(train)
    rng.shuffle(held_out)
    return PromptSplit(train, held_out, seed)


def held_out_text(path: Path = HELD_OUT_TEXT_FILE) -> str:
    """The fixed prose the fluency guard measures perplexity on (written for this project)."""
    return Path(path).read_text(encoding="utf-8")

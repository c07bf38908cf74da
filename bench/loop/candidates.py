"""The base model's replies that no taste changes, generated once and cached.

The k alternatives sampled for each training prompt, and the base model's one reply per
held-out prompt, depend on the model, the sampling settings, the seed and the prompts,
never on whose taste later judges them. `candidates_for` generates them once into a JSON
file (`<out>/candidates.json` by default) and every taste's run replays them from there.

A cache is reused only when its key matches: the model's fingerprint (path, size and
mtime of its weight files), the chat sampling settings, the seed, k, the engine batching,
and prompt ids of which the requested ones are a prefix (a cache of 96 training prompts
serves a run on the first 48: the same prompts with the same per-prompt seeds). Anything
else regenerates it; the file it replaces is moved aside, never lost. This module
generates and stores; judging the replies is the tastes' job, storing them in the chat's
store the simulated user's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.loop.evaluation import answer_held_out, held_out_perplexity
from bench.loop.prompt_set import BenchPrompt

CACHE_FORMAT = 1
CACHE_FILE = "candidates.json"
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".json", ".model")


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str
    num_tokens: int


@dataclass(frozen=True)
class PromptReplies:
    prompt_id: str
    prompt_text: str
    replies: list[Reply]


@dataclass
class CandidateSet:
    key: dict[str, Any]
    train: list[PromptReplies]  # k replies per training prompt, in sample order
    held_out: list[PromptReplies]  # the base model's one reply per held-out prompt
    base_perplexity: float
    seconds: dict[str, float]  # wall time of generating each part (when it was made; pro rata for a prefix)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CandidateSet":
        def group(row: dict[str, Any]) -> PromptReplies:
            return PromptReplies(row["prompt_id"], row["prompt_text"], [Reply(**r) for r in row["replies"]])

        return cls(raw["key"], [group(r) for r in raw["train"]], [group(r) for r in raw["held_out"]],
                   float(raw["base_perplexity"]), dict(raw["seconds"]))

    def first(self, num_train: int, num_held_out: int) -> "CandidateSet":
        """The same set restricted to its first training and held-out prompts."""
        key = dict(self.key, train_ids=self.key["train_ids"][:num_train],
                   held_out_ids=self.key["held_out_ids"][:num_held_out])
        train, held_out = self.train[:num_train], self.held_out[:num_held_out]
        # What generating just these would have taken, pro rata (a part's prompts take alike).
        share = {"train": len(train) / max(1, len(self.train)), "held_out": len(held_out) / max(1, len(self.held_out))}
        seconds = {part: value * share.get(part, 1.0) for part, value in self.seconds.items()}
        return CandidateSet(key, train, held_out, self.base_perplexity, seconds)

    @property
    def generated_tokens(self) -> int:
        return sum(r.num_tokens for group in self.train + self.held_out for r in group.replies)


def model_fingerprint(path: str | Path) -> dict[str, Any]:
    """Which weights a path holds, as far as the file system tells: the path, and the size
    and mtime of each weight, config and tokenizer file (a re-exported model changes it)."""
    path = Path(path).expanduser().resolve()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return {"path": str(path),
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.is_file()]}


def cache_key(model: dict[str, Any], chat_settings: Any, seed: int, k: int, train: list[BenchPrompt],
              held_out: list[BenchPrompt], prompts_per_batch: int, max_batch_rows: int) -> dict[str, Any]:
    s = chat_settings
    return {
        "format": CACHE_FORMAT, "model": model,
        "sampling": {"temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens,
                     "repetition_penalty": s.repetition_penalty},
        "seed": seed, "k": k, "prompts_per_batch": prompts_per_batch, "max_batch_rows": max_batch_rows,
        "train_ids": [p.id for p in train], "held_out_ids": [p.id for p in held_out],
    }


def mismatches(cached: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The key fields in which a cache made under `cached` cannot serve `wanted` (none:
    it serves it). Prompt ids match when the wanted ones are a prefix of the cached ones."""
    out = [name for name in sorted(set(cached) | set(wanted))
           if name not in ("train_ids", "held_out_ids") and cached.get(name) != wanted.get(name)]
    for name in ("train_ids", "held_out_ids"):
        ids = wanted.get(name, [])
        if cached.get(name, [])[: len(ids)] != ids:
            out.append(name)
    return out


def read_cache(path: Path) -> CandidateSet | None:
    """The cache at `path`, or None when it is absent or unreadable."""
    try:
        return CandidateSet.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_cached(path: Path, key: dict[str, Any]) -> CandidateSet | None:
    """The cache at `path` cut to what `key` asks for, or None when absent, unreadable or
    made under a key that does not serve it."""
    candidates = read_cache(path)
    if candidates is None or mismatches(candidates.key, key):
        return None
    return candidates.first(len(key["train_ids"]), len(key["held_out_ids"]))


def set_aside(path: Path) -> Path:
    """Move a cache that is about to be replaced to a free name beside it; its new path."""
    number = 1
    while (target := path.with_name(f"{path.stem}.replaced-{number}{path.suffix}")).exists():
        number += 1
    os.replace(path, target)
    return target


def save(candidates: CandidateSet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(candidates.as_dict(), ensure_ascii=False), encoding="utf-8")
    os.replace(temp, path)


def train_seed(seed: int, index: int) -> int:
    """The sampling seed of the `index`-th training prompt (its k samples derive from it)."""
    return seed * 100_003 + index


def sample_alternatives(loaded: Any, prompts: list[BenchPrompt], chat_settings: Any, seed: int, k: int,
                        prompts_per_batch: int = 32, max_batch_rows: int = 32,
                        on_progress: Callable[[int, int], None] | None = None) -> list[PromptReplies]:
    """k alternatives per prompt, as compare mode samples them (one request with n=k per
    prompt, a new conversation each); several prompts go to the engine together."""
    from engine.engine import LLMEngine

    engine = LLMEngine(loaded, max_batch_size=max(k, max_batch_rows))
    base = chat_settings.sampling_params(n=k)
    out: list[PromptReplies] = []
    step = max(1, prompts_per_batch)
    for start in range(0, len(prompts), step):
        chunk = prompts[start : start + step]
        prompt_ids = [loaded.encode_chat([{"role": "user", "content": p.text}]) for p in chunk]
        params = [dataclasses.replace(base, seed=train_seed(seed, start + i)) for i in range(len(chunk))]
        for prompt, output in zip(chunk, engine.generate(prompt_ids, params)):
            completions = sorted(output.completions, key=lambda c: c.index)
            out.append(PromptReplies(prompt.id, prompt.text,
                                     [Reply(c.text, c.finish_reason, len(c.token_ids)) for c in completions]))
        if on_progress is not None:
            on_progress(len(out), len(prompts))
    return out


def generate(loaded: Any, key: dict[str, Any], train: list[BenchPrompt], held_out: list[BenchPrompt], chat_settings: Any,
             on_progress: Callable[[int, int], None] | None = None) -> CandidateSet:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    _, completions = answer_held_out(loaded, held_out, chat_settings, key["seed"], key["max_batch_rows"])
    base = [PromptReplies(p.id, p.text, [Reply(c.text, c.finish_reason, len(c.token_ids))])
            for p, c in zip(held_out, completions)]
    perplexity = held_out_perplexity(loaded)
    seconds["held_out"] = time.perf_counter() - started
    started = time.perf_counter()
    alternatives = sample_alternatives(loaded, train, chat_settings, key["seed"], key["k"], key["prompts_per_batch"],
                                       key["max_batch_rows"], on_progress)
    seconds["train"] = time.perf_counter() - started
    return CandidateSet(key, alternatives, base, perplexity, seconds)


def candidates_for(path: Path, model_path: str, fingerprint: dict[str, Any], chat_settings: Any, seed: int, k: int,
                   train: list[BenchPrompt], held_out: list[BenchPrompt], prompts_per_batch: int = 32,
                   max_batch_rows: int = 32, echo: Callable[[str], None] = lambda text: None) -> tuple[CandidateSet, bool]:
    """(the candidates, whether they came from the cache at `path`); generated and saved
    there when the cache does not serve this configuration."""
    key = cache_key(fingerprint, chat_settings, seed, k, train, held_out, prompts_per_batch, max_batch_rows)
    cached = load_cached(path, key)
    if cached is not None:
        echo(f"candidates: reusing {path} ({len(cached.train)} training prompts)")
        return cached, True
    from engine.loading import load_model

    old = read_cache(path)
    if old is not None:  # made for another configuration: kept, never overwritten (it took a while)
        differing = ", ".join(mismatches(old.key, key))
        echo(f"candidates: {path} was made with another {differing}; moved to {set_aside(path)}")

    echo(f"candidates: generating {len(train)} x {k} alternatives and {len(held_out)} held-out replies into {path}")
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        echo(f"candidates: {done}/{total} training prompts sampled, {time.perf_counter() - started:.0f}s")

    candidates = generate(load_model(model_path), key, train, held_out, chat_settings, progress)
    save(candidates, path)
    return candidates, False

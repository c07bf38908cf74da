"""One model version answering the held-out prompts, and what is measured on its answers.

Every version answers each held-out prompt once with the chat's sampling settings and the
same per-prompt seed, so differences come from the weights, not from the dice. Measured:
the preference rate (Wilson interval), perplexity on the fixed held-out text, and, given
the parent, the KL of the new version to it along the new version's own replies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bench.loop import measures
from bench.loop.preference import Preference, count_words
from bench.loop.prompt_set import BenchPrompt, held_out_text

HELD_OUT_SEED_OFFSET = 7  # held-out seeds live in their own range, apart from the collection's


@dataclass
class VersionEval:
    name: str
    version_id: int | None
    texts: list[str]
    word_counts: list[int]
    satisfied: list[bool]
    finish_reasons: list[str]
    rate: measures.Rate
    perplexity: float
    kl_to_parent: measures.KLSummary | None = None
    generated_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version_id": self.version_id, "preference_rate": self.rate.as_dict(),
            "perplexity": self.perplexity, "kl_to_parent": self.kl_to_parent.as_dict() if self.kl_to_parent else None,
            "mean_words": sum(self.word_counts) / max(1, len(self.word_counts)),
            "median_words": sorted(self.word_counts)[len(self.word_counts) // 2] if self.word_counts else 0,
            "length_cutoffs": sum(r == "length" for r in self.finish_reasons),
            "generated_tokens": self.generated_tokens,
        }


def evaluate_version(
    name: str,
    version_id: int | None,
    path: str,
    held_out: list[BenchPrompt],
    preference: Preference,
    chat_settings: Any,
    seed: int = 0,
    max_batch_rows: int = 32,
    parent: Any | None = None,
) -> tuple[VersionEval, Any]:
    """(the evaluation, the loaded model); `parent` is a LoadedModel to measure KL against."""
    from engine.engine import LLMEngine
    from engine.loading import load_model

    loaded = load_model(path)
    base_params = chat_settings.sampling_params(n=1)
    engine = LLMEngine(loaded, max_batch_size=max_batch_rows)
    prompt_ids = [loaded.encode_chat([{"role": "user", "content": p.text}]) for p in held_out]
    params = [dataclasses.replace(base_params, seed=(seed + HELD_OUT_SEED_OFFSET) * 1_000_003 + i) for i in range(len(held_out))]
    completions = [output.completions[0] for output in engine.generate(prompt_ids, params)]
    texts = [c.text for c in completions]
    satisfied = [preference.satisfied(t) for t in texts]
    ppl = measures.perplexity(loaded.model, loaded.tokenizer.encode(held_out_text()))
    kl = None
    if parent is not None:
        kl = measures.kl_along_replies(loaded.model, parent.model, prompt_ids, [list(c.token_ids) for c in completions])
    result = VersionEval(name, version_id, texts, [count_words(t) for t in texts], satisfied,
                         [c.finish_reason for c in completions], measures.rate(satisfied), ppl, kl,
                         sum(len(c.token_ids) for c in completions))
    return result, loaded

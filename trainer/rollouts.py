"""Sampling replies from the policy being trained: the rollouts of on-policy algorithms
and the replies an evaluation compares.

Sampling is plain softmax(logits / T) (no top-k, top-p or penalties), the distribution
the trainers' log-probs assume. With LoRA attached, the adapters are folded into plain
layers for the duration of the sampling (`lora.folded`), so the engine decodes through
its fast path; the log-probs the trainers use are recomputed by their own forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from engine.engine import LLMEngine
from engine.sampling import SamplingParams
from trainer import lora


@dataclass
class Rollouts:
    """One row per sampled reply."""

    prompts: list[list[int]] = field(default_factory=list)
    replies: list[list[int]] = field(default_factory=list)  # an ended reply keeps its stop token last
    texts: list[str] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)  # False: cut at max_new_tokens
    prompt_index: list[int] = field(default_factory=list)  # which prompt each row answers
    logprobs: list[list[float]] = field(default_factory=list)  # the engine's, when asked for

    @property
    def num_rows(self) -> int:
        return len(self.replies)


def plain_sampling(temperature: float, max_new_tokens: int, n: int, seed: int, logprobs: bool = False) -> SamplingParams:
    return SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                          max_new_tokens=max_new_tokens, n=n, seed=seed, logprobs=logprobs)


@torch.no_grad()
def sample_rollouts(
    engine: LLMEngine, prompts: list[list[int]], samples_per_prompt: int, max_new_tokens: int, temperature: float,
    seed: int, logprobs: bool = False, sampling: SamplingParams | None = None,
) -> Rollouts:
    """`samples_per_prompt` replies to each prompt, one seed per prompt (a shared seed would
    give every prompt the same random stream). Empty replies are left out. `sampling`
    replaces plain sampling at `temperature` (its length, count and seed are set here)."""
    if sampling is None:
        params = [plain_sampling(temperature, max_new_tokens, samples_per_prompt, seed * 1_009 + i, logprobs)
                  for i in range(len(prompts))]
    else:
        params = [replace(sampling, max_new_tokens=max_new_tokens, n=samples_per_prompt, seed=seed * 1_009 + i,
                          logprobs=logprobs) for i in range(len(prompts))]
    with lora.folded(engine.model):
        outputs = engine.generate(prompts, params)
    out = Rollouts()
    for index, (prompt, output) in enumerate(zip(prompts, outputs)):
        for completion in sorted(output.completions, key=lambda c: c.index):
            if not completion.token_ids:
                continue
            out.prompts.append(list(prompt))
            out.replies.append(list(completion.token_ids))
            out.texts.append(completion.text)
            out.finished.append(completion.finish_reason == "stop")
            out.prompt_index.append(index)
            out.logprobs.append(list(completion.logprobs or []))
    return out

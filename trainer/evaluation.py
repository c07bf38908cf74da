"""Evaluating a trained policy against its parent on held-out prompts.

Both versions answer the same held-out prompts (plain sampling, the same seeds); the
reward model scores every reply; the KL of the new version to its parent is estimated on
the new version's own replies (mean over replies of the summed per-token
log pi_new - log pi_parent, an unbiased estimate of the sequence-level KL); a few replies
are kept side by side for the user to read. `improved` says whether the new version's
mean reward beats the parent's.

Generation goes through the engine; with LoRA the parent is the policy with its adapters
disabled, otherwise a separate frozen module with its own engine.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.engine import LLMEngine
from engine.sampling import SamplingParams
from trainer import lora
from trainer.batch import make_batch
from trainer.datasets import PromptExample
from trainer.logprobs import ReplyScorer, reply_logprobs
from trainer.reward_training import score_rows


@dataclass
class SampledReplies:
    prompts: list[list[int]]
    replies: list[list[int]]
    texts: list[str]
    finished: list[bool]
    prompt_index: list[int]  # which held-out prompt each row answers


@dataclass
class PolicyComparison:
    parent_reward: float
    new_reward: float
    kl: float  # estimated KL(new || parent) per reply, in nats
    parent_reply_length: float
    new_reply_length: float
    samples: list[dict[str, str]] = field(default_factory=list)  # prompt / parent / new

    @property
    def improved(self) -> bool:
        return self.new_reward > self.parent_reward

    def metrics(self) -> dict[str, float]:
        return {
            "eval_parent_reward": self.parent_reward,
            "eval_new_reward": self.new_reward,
            "eval_reward_gain": self.new_reward - self.parent_reward,
            "eval_kl": self.kl,
            "eval_parent_reply_length": self.parent_reply_length,
            "eval_new_reply_length": self.new_reply_length,
        }


def sample_replies(
    engine: LLMEngine, prompts: list[PromptExample], max_new_tokens: int, temperature: float = 1.0, samples_per_prompt: int = 1, seed: int = 0
) -> SampledReplies:
    """Plain-sampled replies from the engine's model, one seed per prompt (reproducible)."""
    params = [
        SamplingParams(temperature=temperature, top_k=0, top_p=1.0, repetition_penalty=1.0,
                       max_new_tokens=max_new_tokens, n=samples_per_prompt, seed=seed * 1_009 + i)
        for i in range(len(prompts))
    ]
    outputs = engine.generate([p.prompt_ids for p in prompts], params)
    out = SampledReplies([], [], [], [], [])
    for index, (prompt, output) in enumerate(zip(prompts, outputs)):
        for completion in output.completions:
            if not completion.token_ids:
                continue
            out.prompts.append(prompt.prompt_ids)
            out.replies.append(list(completion.token_ids))
            out.texts.append(completion.text)
            out.finished.append(completion.finish_reason == "stop")
            out.prompt_index.append(index)
    return out


@torch.no_grad()
def sequence_kl(
    policy: nn.Module,
    reference: nn.Module | None,
    prompts: list[list[int]],
    replies: list[list[int]],
    pad_id: int,
    device: torch.device | str,
    temperature: float = 1.0,
    rows_per_batch: int = 16,
) -> torch.Tensor:
    """Summed log pi - log pi_ref over each reply's tokens, (N,). With reference None the
    reference is `policy` with its LoRA adapters disabled."""
    out = []
    for start in range(0, len(replies), rows_per_batch):
        batch = make_batch(prompts[start : start + rows_per_batch], replies[start : start + rows_per_batch], pad_id, device)
        new = reply_logprobs(ReplyScorer(policy), batch, temperature)
        if reference is None:
            with lora.disabled(policy):
                old = reply_logprobs(ReplyScorer(policy), batch, temperature)
        else:
            old = reply_logprobs(ReplyScorer(reference), batch, temperature)
        out.append(((new.logprobs - old.logprobs) * new.mask).sum(-1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def compare_with_parent(
    policy_engine: LLMEngine,
    parent_engine: LLMEngine | None,
    reward_model: nn.Module | None,
    prompts: list[PromptExample],
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    num_samples_shown: int = 3,
    seed: int = 1234,
) -> PolicyComparison:
    """Sample both versions on `prompts` and compare them (see the module docstring).

    parent_engine None: the parent is the policy engine's model with adapters disabled.
    reward_model None (DPO without a reward model): rewards are reported as 0.
    """
    policy = policy_engine.model
    device = next(policy.parameters()).device
    new = sample_replies(policy_engine, prompts, max_new_tokens, temperature, seed=seed)
    parent_context = lora.disabled(policy) if parent_engine is None else nullcontext()
    with parent_context:
        parent = sample_replies(parent_engine or policy_engine, prompts, max_new_tokens, temperature, seed=seed)
    reference = None if parent_engine is None else parent_engine.model
    kl = sequence_kl(policy, reference, new.prompts, new.replies, pad_id, device, temperature)

    def mean_reward(samples: SampledReplies) -> tuple[float, torch.Tensor]:
        if reward_model is None or not samples.replies:
            return 0.0, torch.zeros(len(samples.replies))
        scores = score_rows(reward_model, samples.prompts, samples.replies, pad_id, device)
        return float(scores.mean()), scores

    parent_reward, _ = mean_reward(parent)
    new_reward, _ = mean_reward(new)
    shown = []
    for i in range(min(num_samples_shown, len(prompts))):
        context = prompts[i].context
        shown.append({
            "prompt": context[-1]["content"] if context else "",
            "parent": next((t for t, k in zip(parent.texts, parent.prompt_index) if k == i), ""),
            "new": next((t for t, k in zip(new.texts, new.prompt_index) if k == i), ""),
        })
    mean_length = lambda s: sum(len(r) for r in s.replies) / max(1, len(s.replies))  # noqa: E731
    return PolicyComparison(
        parent_reward, new_reward, float(kl.mean()) if len(kl) else 0.0, mean_length(parent), mean_length(new), shown
    )

"""Evaluating a trained policy against its parent on held-out prompts.

Both versions answer the same held-out prompts as the chat would (its recommended
sampling, repetition penalty included, the same seeds): those replies' lengths are
compared by their medians, the reward model, when there is one, scores them, and a few
are kept side by side for the user to read. Plain sampling would judge lengths the user
never sees: a small model without the penalty loops until the limit far more often. The
KL of the new version to its parent is estimated on the new version's own plain-sampled
replies (mean over replies of the summed per-token log pi_new - log pi_parent, an
unbiased estimate of the sequence-level KL). Whether the version is better is decided on held-out feedback
(held_out.py), not on this reward model, which the policy was optimised against.

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
from trainer.rollouts import Rollouts, sample_rollouts


@dataclass
class PolicyComparison:
    parent_reward: float | None  # None without a reward model
    new_reward: float | None
    kl: float  # estimated KL(new || parent) per reply, in nats
    parent_lengths: list[int]  # reply lengths in tokens
    new_lengths: list[int]
    samples: list[dict[str, str]] = field(default_factory=list)  # prompt / parent / new

    @property
    def length_change(self) -> float | None:
        """The new version's median reply length over its parent's, minus 1."""
        if not self.parent_lengths or not self.new_lengths:
            return None
        return median(self.new_lengths) / max(1.0, median(self.parent_lengths)) - 1.0

    def metrics(self) -> dict[str, float]:
        out = {
            "eval_kl": self.kl,
            "eval_parent_median_reply_tokens": median(self.parent_lengths) if self.parent_lengths else 0.0,
            "eval_new_median_reply_tokens": median(self.new_lengths) if self.new_lengths else 0.0,
        }
        if self.length_change is not None:
            out["eval_reply_length_change"] = self.length_change
        if self.parent_reward is not None and self.new_reward is not None:
            out.update({"eval_parent_reward": self.parent_reward, "eval_new_reward": self.new_reward,
                        "eval_reward_gain": self.new_reward - self.parent_reward})
        return out


def median(values: list[int]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return float(ordered[middle]) if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def sample_replies(
    engine: LLMEngine, prompts: list[PromptExample], max_new_tokens: int, temperature: float = 1.0,
    samples_per_prompt: int = 1, seed: int = 0, as_the_chat: bool = False,
) -> Rollouts:
    """Replies from the engine's model, one seed per prompt (reproducible): plain sampling
    at `temperature`, or with `as_the_chat` the chat's recommended sampling."""
    sampling = SamplingParams.chat_defaults() if as_the_chat else None
    return sample_rollouts(engine, [p.prompt_ids for p in prompts], samples_per_prompt, max_new_tokens, temperature,
                           seed, sampling=sampling)


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
    reward_model None (DPO without a reward model): no rewards are reported.
    """
    policy = policy_engine.model
    device = next(policy.parameters()).device
    plain = sample_replies(policy_engine, prompts, max_new_tokens, temperature, seed=seed)
    new = sample_replies(policy_engine, prompts, max_new_tokens, seed=seed, as_the_chat=True)
    parent_context = lora.disabled(policy) if parent_engine is None else nullcontext()
    with parent_context:
        parent = sample_replies(parent_engine or policy_engine, prompts, max_new_tokens, seed=seed, as_the_chat=True)
    reference = None if parent_engine is None else parent_engine.model
    kl = sequence_kl(policy, reference, plain.prompts, plain.replies, pad_id, device, temperature)

    def mean_reward(samples: Rollouts) -> float | None:
        if reward_model is None or not samples.replies:
            return None
        return float(score_rows(reward_model, samples.prompts, samples.replies, pad_id, device).mean())

    parent_reward, new_reward = mean_reward(parent), mean_reward(new)
    shown = []
    for i in range(min(num_samples_shown, len(prompts))):
        context = prompts[i].context
        shown.append({
            "prompt": context[-1]["content"] if context else "",
            "parent": next((t for t, k in zip(parent.texts, parent.prompt_index) if k == i), ""),
            "new": next((t for t, k in zip(new.texts, new.prompt_index) if k == i), ""),
        })
    return PolicyComparison(parent_reward, new_reward, float(kl.mean()) if len(kl) else 0.0,
                            [len(r) for r in parent.replies], [len(r) for r in new.replies], shown)

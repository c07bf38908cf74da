"""The tensor arithmetic of RLHF: log-probs, masks, KL, GAE, and the losses.

Every function here is pure (tensors in, tensors out), has no model or optimizer in it,
and is tested against hand-computed numbers in tests/test_trainer_ops.py. The open RLHF
implementations of 2022-23 went wrong exactly here (off-by-one shifts, eos left out of the
mask, padding counted, the KL penalty's sign), so the conventions are spelled out once:

* A training row is `prompt + reply + padding`, right-padded. Causal attention means the
  padding never influences a real token, so no attention mask is needed for scoring.
* Logits at position t predict the token at t+1. `shifted_token_logprobs` returns a
  (B, T-1) grid whose column j is log p(token[j+1] | tokens[..j]). Every per-token PPO
  quantity (log-probs, KL, values, rewards, advantages) lives on that grid.
* `action_mask` marks the grid columns whose predicted token is a reply token: the reply
  occupies token positions [prompt_len, prompt_len + reply_len), so the grid columns
  [prompt_len - 1, prompt_len + reply_len - 1). The reply's final token (eos, when the
  reply ended) is inside; the prompt and the padding are not.
* KL is measured as log pi(a) - log pi_ref(a) per token; the reward is *minus* beta times
  it, so drifting away from the reference costs reward.

What is not here: models, batching, optimizers, accelerate (see ppo.py, dpo.py, sft.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------
# Log-probabilities


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`. logits (..., V), tokens (...) -> (...).

    Computed in float32 whatever the logits' dtype: bf16 log-softmax loses the small
    differences PPO's ratio is made of.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to compute log-probs, got {temperature}")
    scaled = logits.float()
    if temperature != 1.0:
        scaled = scaled / temperature
    # cross_entropy fuses the log-softmax and the pick: no second (.., V) tensor of log-probs.
    flat = scaled.reshape(-1, scaled.shape[-1])
    picked = -F.cross_entropy(flat, tokens.reshape(-1), reduction="none")
    return picked.reshape(tokens.shape)


def shifted_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each next token. logits (B, T, V), input_ids (B, T) -> (B, T-1).

    Column j is log p(input_ids[:, j+1] | input_ids[:, :j+1]).
    """
    return gather_logprobs(logits[:, :-1], input_ids[:, 1:], temperature)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) over the last axis. (..., V) -> (...)."""
    scaled = logits.float() / temperature
    log_p = torch.log_softmax(scaled, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


# ---------------------------------------------------------------------------------------
# Masks


def padding_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B,) lengths -> (B, total) float mask, 1 on the first `length` positions of a row."""
    positions = torch.arange(total, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).float()


def reply_token_mask(prompt_lengths: torch.Tensor, reply_lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B, total) mask of reply tokens: positions [prompt_len, prompt_len + reply_len)."""
    positions = torch.arange(total, device=prompt_lengths.device)[None, :]
    start = prompt_lengths[:, None]
    end = start + reply_lengths[:, None]
    return ((positions >= start) & (positions < end)).float()


def action_mask(prompt_lengths: torch.Tensor, reply_lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B, total - 1) mask on the shifted grid: 1 where the predicted token is a reply token."""
    return reply_token_mask(prompt_lengths, reply_lengths, total)[:, 1:]


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a (B, T) mask, -1 for an all-zero row."""
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :].expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


# ---------------------------------------------------------------------------------------
# Masked statistics


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (all of them, or along `dim`).

    An all-zero mask gives 0 rather than NaN (the count is clamped to 1).
    """
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over masked positions (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    count = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked positions; masked-out positions come back as 0.

    With shift_mean=False the mean is added back (scale only), as some recipes do for rewards.
    """
    mean = masked_mean(x, mask)
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# ---------------------------------------------------------------------------------------
# KL between policy and reference, per token


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log pi_ref at the sampled tokens: unbiased for KL(pi||ref), can be < 0."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with r = pi_ref / pi: unbiased for KL(pi||ref) and never negative."""
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio


def kl_penalised_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -beta * KL on every reply token, plus the score on the last one.

    scores (B,), logp/ref_logp/mask (B, L) on the shifted grid. Returns (rewards, kl), both
    (B, L) and zero outside the mask. A row with an empty mask gets no score.
    """
    kl = kl_k1(logp, ref_logp) * mask
    rewards = -beta * kl
    last = last_index(mask)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    rewards[rows, last[rows]] += scores[rows].to(rewards.dtype)
    return rewards, kl


# ---------------------------------------------------------------------------------------
# Advantages


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's masked (reply) positions.

    rewards, values, mask: (B, L); the masked positions of a row must be contiguous.
    The value after the last reply token is 0 (the episode ends there), so
      delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t
      A_t     = delta_t + gamma * lam * m_{t+1} * A_{t+1}
    Returns (advantages, returns = advantages + values), both zero outside the mask.
    """
    rewards, values, mask = rewards.float(), values.float(), mask.float()
    B, L = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(B, device=rewards.device)
    next_advantage = torch.zeros(B, device=rewards.device)
    next_mask = torch.zeros(B, device=rewards.device)
    for t in reversed(range(L)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        advantage = delta + gamma * lam * next_mask * next_advantage
        advantages[:, t] = advantage * mask[:, t]
        next_value, next_advantage, next_mask = values[:, t], advantages[:, t], mask[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


# ---------------------------------------------------------------------------------------
# PPO losses


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, averaged over masked tokens.

    loss_t = max(-A_t * r_t, -A_t * clamp(r_t, 1 - clip, 1 + clip)), r_t = exp(logp - old).
    Also returns clip_fraction (share of tokens where the clipped term was the larger) and
    approx_kl (k3 estimate of KL(old || new) on the sampled tokens; 0 before any update).
    """
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(ratio - 1.0 - log_ratio, mask)
    return loss, {"clip_fraction": clip_fraction, "approx_kl": approx_kl}


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * max((V - R)^2, (V_clipped - R)^2) over masked tokens, V_clipped within clip of old.

    Returns (loss, {"value_clip_fraction"}).
    """
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, {"value_clip_fraction": fraction}


# ---------------------------------------------------------------------------------------
# Preference losses


def bradley_terry_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """-log sigmoid(r_chosen - r_rejected), averaged; also the pair accuracy (r_c > r_r).

    `weights` (one per pair) makes it a weighted mean: giving each pair of a k-way ranking
    weight 1 / (its number of pairs) counts every prompt once, however many replies it has.
    """
    margin = chosen_scores.float() - rejected_scores.float()
    if weights is None:
        weights = torch.ones_like(margin)
    weights = weights.float()
    loss = -(weights * F.logsigmoid(margin)).sum() / weights.sum()
    accuracy = (margin > 0).float().mean()
    return loss, accuracy


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Direct preference optimisation (sigmoid form), averaged over pairs.

    Inputs are summed reply log-probs per sequence (B,). With
      z = beta * ((pi_c - ref_c) - (pi_r - ref_r)),
    loss = -(1 - eps) * log sigmoid(z) - eps * log sigmoid(-z)   (eps = label_smoothing,
    the assumed probability that a label is flipped). Also returns the implicit rewards
    beta * (pi - ref) of both sides, their margin and the accuracy (z > 0).
    """
    chosen_reward = beta * (policy_chosen.float() - reference_chosen.float())
    rejected_reward = beta * (policy_rejected.float() - reference_rejected.float())
    z = chosen_reward - rejected_reward
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    metrics = {
        "chosen_reward": chosen_reward.detach().mean(),
        "rejected_reward": rejected_reward.detach().mean(),
        "reward_margin": z.detach().mean(),
        "accuracy": (z.detach() > 0).float().mean(),
    }
    return losses.mean(), metrics


def kto_reference_point(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0: an estimate of KL(pi || pi_ref), the mean implicit reward
    log pi(y) - log pi_ref(y) over a batch's rows, floored at 0 and detached (no gradient
    flows through the point the rewards are compared with)."""
    return (policy_logps.float() - reference_logps.float()).mean().clamp(min=0.0).detach()


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    labels: torch.Tensor,
    reference_point: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Kahneman-Tversky optimisation (Ethayarajh et al. 2024) on unpaired judgments.

    Summed reply log-probs (B,) and labels (B,) of +1 (desirable) or -1 (undesirable).
    With r = log pi - log pi_ref and z0 the reference point,
      desirable:   w_D * (1 - sigmoid(beta * (r - z0)))
      undesirable: w_U * (1 - sigmoid(beta * (z0 - r)))
    averaged over rows. Also returns the share of rows on the right side of z0.
    """
    rewards = policy_logps.float() - reference_logps.float()
    z0 = torch.as_tensor(reference_point, dtype=rewards.dtype, device=rewards.device)
    desirable = labels > 0
    side = torch.where(desirable, rewards - z0, z0 - rewards)
    weights = torch.where(desirable, torch.full_like(rewards, desirable_weight), torch.full_like(rewards, undesirable_weight))
    losses = weights * (1.0 - torch.sigmoid(beta * side))
    return losses.mean(), {"kto_accuracy": (side.detach() > 0).float().mean(), "kto_reference_point": z0.detach()}


def leave_one_out_advantages(scores: torch.Tensor) -> torch.Tensor:
    """RLOO's advantage of each of k samples of one prompt: its score minus the mean of the
    other k - 1 samples' scores. scores (P, k) -> (P, k); needs k >= 2."""
    k = scores.shape[-1]
    if k < 2:
        raise ValueError(f"a leave-one-out baseline needs at least 2 samples per prompt, got {k}")
    others = (scores.sum(-1, keepdim=True) - scores) / (k - 1)
    return scores - others


def group_normalized_advantages(scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage: each sample's score standardised within its prompt's group,
    (score - mean) / (std + eps), with the unbiased std. scores (P, k) -> (P, k)."""
    mean = scores.mean(-1, keepdim=True)
    std = scores.std(-1, keepdim=True, unbiased=True) if scores.shape[-1] > 1 else torch.zeros_like(mean)
    return (scores - mean) / (std + eps)


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probs over each row's mask: (B, L) -> (B,)."""
    return (token_logprobs * mask).sum(-1)


# ---------------------------------------------------------------------------------------
# Adaptive KL coefficient


class AdaptiveKLController:
    """Moves beta so that the measured KL tracks a target (Ziegler et al. 2019).

    beta <- beta * (1 + clamp(KL / target - 1, -0.2, 0.2) * n_steps / horizon)
    """

    def __init__(self, init_beta: float, target: float, horizon: int = 10000) -> None:
        if target <= 0:
            raise ValueError(f"target KL must be > 0, got {target}")
        self.beta = init_beta
        self.target = target
        self.horizon = horizon

    def update(self, measured_kl: float, num_steps: int) -> float:
        error = max(-0.2, min(0.2, measured_kl / self.target - 1.0))
        self.beta *= 1.0 + error * num_steps / self.horizon
        return self.beta


class FixedKLController:
    """A constant beta, with the same interface as AdaptiveKLController."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update(self, measured_kl: float, num_steps: int) -> float:
        return self.beta

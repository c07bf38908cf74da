"""Batched logits -> next-token functions, one row per sequence, each with its own settings.

Every stage is a tensor operation over the whole batch, so the Python work per step does
not grow with the batch size:

    apply_repetition_penalty -> scale by temperature -> filter (top-k, top-p, min-p)
    -> Gumbel-max sampling with counter-based noise (or argmax when temperature is 0)

The noise for row b at step t and token v is a hash of (seed_b, t, v), not the state of
a shared generator. So a sample depends only on its own seed and history: the same seed
gives the same text whether the sequence runs alone or in a batch of 32, and the n
samples of one prompt (different seeds) differ.

Log-probabilities are those of the sampling distribution before filtering:
log_softmax(logits / temperature) (temperature 1 for greedy rows), the quantity a trainer
recomputes from a forward pass. The repetition penalty is a decoding heuristic and is not
part of them.
"""

from __future__ import annotations

import torch

# Candidates examined for top-k / top-p. When a row's nucleus needs more than this many
# tokens, that step falls back to sorting the whole vocabulary.
NUM_CANDIDATES = 1024

_M64 = (1 << 64) - 1


def _as_signed(x: int) -> int:
    x &= _M64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _as_signed(0x9E3779B97F4A7C15)
_MIX1 = _as_signed(0xBF58476D1CE4E5B9)
_MIX2 = _as_signed(0x94D049BB133111EB)
_STEP_MUL = _as_signed(0xD1B54A32D192ED03)
_TOKEN_MUL = _as_signed(0xCA5A826395121157)


def _shift_right_logical(x: torch.Tensor, bits: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic; mask off the copied sign bits.
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (multiplication wraps modulo 2**64)."""
    z = x + _GOLDEN
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    return z ^ _shift_right_logical(z, 31)


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Uniform (0, 1) floats, shape (B, V), a pure function of (seed, step, token id)."""
    token = torch.arange(vocab_size, device=seeds.device, dtype=torch.long)
    row_key = _splitmix64(seeds * _GOLDEN + steps * _STEP_MUL)  # (B,)
    bits = _splitmix64(row_key[:, None] ^ (token[None] * _TOKEN_MUL))  # (B, V)
    top24 = _shift_right_logical(bits, 40).float()
    return (top24 + 0.5) / float(1 << 24)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """CTRL-style: seen tokens' positive logits divided by the penalty, negative ones multiplied."""
    p = penalty[:, None]
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def filter_logits(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> torch.Tensor:
    """Set to -inf every token outside each row's top-k, nucleus (top-p) and min-p sets.

    logits are temperature-scaled (B, V). top_k 0, top_p 1 and min_p 0 disable a filter.
    """
    B, V = logits.shape
    neg_inf = torch.finfo(logits.dtype).min
    needs_rank = bool(((top_k > 0) | (top_p < 1)).any())
    if needs_rank:
        k = min(V, NUM_CANDIDATES)
        values, _ = torch.topk(logits, k, dim=-1)  # (B, k) descending
        # Probabilities of the candidates under the full distribution.
        probs = (values - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
        if k < V and bool((probs.sum(-1) < top_p).any()):
            values, _ = torch.sort(logits, dim=-1, descending=True)
            probs = (values - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
            k = V
        keep = torch.ones_like(values, dtype=torch.bool)
        rank = torch.arange(k, device=logits.device)[None]
        keep &= (top_k[:, None] <= 0) | (rank < top_k[:, None])
        # A token is in the nucleus if the mass before it is below top_p (the first always is).
        mass_before = probs.cumsum(-1) - probs
        keep &= mass_before < top_p[:, None]
        # The smallest kept value is each row's threshold.
        last_kept = keep.sum(-1).clamp(min=1) - 1
        threshold = values.gather(-1, last_kept[:, None])  # (B, 1)
        logits = torch.where(logits < threshold, neg_inf, logits)
    if bool((min_p > 0).any()):
        probs = torch.softmax(logits, dim=-1)
        floor = min_p[:, None] * probs.max(dim=-1, keepdim=True).values
        logits = torch.where(probs < floor, neg_inf, logits)
    return logits


def sample_next_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seen: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    want_logprobs: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next token ids (B,) and, when asked, their log-probabilities (B,)."""
    logits = logits.float()
    greedy = temperature <= 0
    safe_temperature = torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    logprobs = None
    if want_logprobs:
        logprobs_all = torch.log_softmax(logits / safe_temperature, dim=-1)
    if bool((repetition_penalty != 1).any()):
        logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    greedy_tokens = logits.argmax(dim=-1)
    if bool(greedy.all()):
        tokens = greedy_tokens
    else:
        scaled = filter_logits(logits / safe_temperature, top_k, top_p, min_p)
        gumbel = -torch.log(-torch.log(uniform_noise(seeds, steps, logits.shape[-1])))
        sampled = (scaled + gumbel).argmax(dim=-1)
        tokens = torch.where(greedy, greedy_tokens, sampled)
    if want_logprobs:
        logprobs = logprobs_all.gather(-1, tokens[:, None])[:, 0]
    return tokens, logprobs

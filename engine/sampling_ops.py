"""Batched logits -> next-token functions, one row per sequence, each with its own settings.

Every stage is a tensor operation over the whole batch, so the Python work per step does
not grow with the batch size:

    scale by temperature -> repetition penalty on the tokens seen
    -> the tokens each row's filters keep (top-k, top-p, min-p), with their probabilities
    -> inverse-transform sampling with one counter-based uniform per row
       (or argmax when temperature is 0)

The draw is the first token, in vocabulary order, whose cumulative probability under the
row's filtered distribution exceeds the row's uniform. A row's uniform at step t is a hash
of (seed, t), not the state of a shared generator. So a sample depends only on its own
seed and history: the same seed gives the same text whether the sequence runs alone or in
a batch of 32 (every reduction is row by row, and which path a row takes depends only on
its own settings), and the n samples of one prompt (different seeds) differ. One uniform
per row replaced Gumbel noise hashed per (seed, step, token), a (B, V) pass of 64-bit
integer arithmetic that cost several times the rest of sampling (docs/performance.md,
Engine notes).

Rows with top-k or top-p (the chat's default is top-p 0.9) keep at most a few dozen
tokens, so they are drawn from their top candidates alone, put back in vocabulary order:
no softmax, cumulative sum or mask over the whole vocabulary. Rows without either filter
are drawn from the whole vocabulary. The repetition penalty touches only the seen tokens.

Log-probabilities are those of the sampling distribution before filtering:
log_softmax(logits / temperature) (temperature 1 for greedy rows), the quantity a trainer
recomputes from a forward pass. The repetition penalty is a decoding heuristic and is not
part of them.
"""

from __future__ import annotations

import torch

# How many of each row's highest logits top-k / top-p look at, tried in turn: a row whose
# top-k or nucleus needs more than one count moves the step on to the next, and beyond
# the last the whole vocabulary is sorted. Each count costs more than the one before and a
# full sort far more; a chat nucleus seldom needs more than 64.
CANDIDATE_COUNTS = (64, 1024)

# Whole-vocabulary draws look for the chunk of this many tokens first (inverse_cdf_by_chunks).
CDF_CHUNK = 256

_M64 = (1 << 64) - 1


def _as_signed(x: int) -> int:
    x &= _M64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _as_signed(0x9E3779B97F4A7C15)
_MIX1 = _as_signed(0xBF58476D1CE4E5B9)
_MIX2 = _as_signed(0x94D049BB133111EB)
_STEP_MUL = _as_signed(0xD1B54A32D192ED03)


def _shift_right_logical(x: torch.Tensor, bits: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic; mask off the copied sign bits.
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (multiplication wraps modulo 2**64)."""
    z = x + _GOLDEN
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    return z ^ _shift_right_logical(z, 31)


def row_uniforms(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One uniform float64 in (0, 1) per row (B,), a pure function of (seed, step)."""
    bits = _splitmix64(seeds * _GOLDEN + steps * _STEP_MUL)
    top52 = _shift_right_logical(bits, 12).double()
    return (top52 + 0.5) / float(1 << 52)  # strictly inside (0, 1): 52 bits and a half fit a double exactly


def _first_above(cdf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each row's first position whose cumulative weight cdf (B, N) exceeds target (B, 1).
    The target is held below the row's total, so that position exists and, since the
    cumulative weight rose there, has a weight above 0."""
    total = cdf[:, -1:]
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True)[:, 0]


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """For each row of non-negative weights (B, N), the first position whose cumulative
    weight (in float64) exceeds that row's uniform (B,) times the row's total: a draw in
    proportion to the weights. A position of weight 0 is never drawn."""
    cdf = weights.double().cumsum(dim=-1)  # (B, N)
    return _first_above(cdf, uniforms[:, None] * cdf[:, -1:])


def inverse_cdf_by_chunks(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """`inverse_cdf` for whole-vocabulary rows, where a float64 cumulative sum over every
    weight is the slowest step of sampling: find the chunk of
    CDF_CHUNK weights that holds the draw from the chunks' sums, then the position within
    that one chunk. The same draw up to the rounding of the chunks' float32 sums."""
    B, N = weights.shape
    padded = weights if N % CDF_CHUNK == 0 else torch.nn.functional.pad(weights, (0, -N % CDF_CHUNK))
    chunks = padded.view(B, -1, CDF_CHUNK)  # (B, N / C, C)
    chunk_cdf = chunks.sum(dim=-1).double().cumsum(dim=-1)  # (B, N / C)
    target = uniforms[:, None] * chunk_cdf[:, -1:]  # (B, 1)
    chunk = _first_above(chunk_cdf, target)  # (B,)
    before = chunk_cdf.gather(-1, (chunk - 1).clamp(min=0)[:, None]) * (chunk > 0)[:, None]  # (B, 1)
    inside = chunks.gather(1, chunk[:, None, None].expand(B, 1, CDF_CHUNK))[:, 0].double().cumsum(dim=-1)  # (B, C)
    return chunk * CDF_CHUNK + _first_above(inside, target - before)


def penalise_seen_(scaled: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> None:
    """CTRL-style repetition penalty, in place: seen tokens' positive logits divided by the
    row's penalty, negative ones multiplied.

    Only the seen entries are read and written (prompt and reply, a few hundred of a row's
    vocabulary). Dividing by a positive temperature keeps each logit's sign, so the penalty
    may come after the temperature: penalise(x) / T == penalise(x / T)."""
    rows, tokens = seen.nonzero(as_tuple=True)
    picked = scaled[rows, tokens]
    p = penalty[rows]
    scaled[rows, tokens] = torch.where(picked > 0, picked / p, picked * p)


def _ranked(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's highest logits in descending order, as many as every row's top-k and
    nucleus need (B, C), their token ids (B, C), and their probabilities under the full
    distribution (B, C)."""
    V = logits.shape[-1]
    log_total = torch.logsumexp(logits, dim=-1, keepdim=True)
    for count in CANDIDATE_COUNTS:
        if count >= V:
            break
        if int(top_k.max()) > count:
            continue
        values, ids = torch.topk(logits, count, dim=-1)
        probs = (values - log_total).exp()
        if not bool(((top_p < 1) & (probs.sum(-1) < top_p)).any()):
            return values, ids, probs
    values, ids = torch.sort(logits, dim=-1, descending=True)
    return values, ids, (values - log_total).exp()


def ranked_candidates(
    scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens each row's top-k, nucleus (top-p) and min-p keep, for rows with top-k or
    top-p: their ids in vocabulary order (B, C) and their probabilities under the full
    distribution (B, C). Past a row's kept tokens, ids are V and probabilities 0.

    scaled: temperature-scaled logits (B, V). top_k 0, top_p 1 and min_p 0 disable a
    filter; a row with neither top-k nor top-p gets only its top candidates here, so such
    rows go to `vocabulary_probabilities` instead."""
    values, ids, probs = _ranked(scaled, top_k, top_p)
    rank = torch.arange(values.shape[-1], device=scaled.device)[None]
    keep = (top_k[:, None] <= 0) | (rank < top_k[:, None])
    # A token is in the nucleus if the mass before it is below top_p (the first always is).
    keep &= probs.cumsum(-1) - probs < top_p[:, None]
    keep &= probs >= min_p[:, None] * probs[:, :1]
    # Each filter keeps a prefix of the ranking. Ties with its last value are kept too, as a
    # threshold on the whole vocabulary would keep them.
    last_kept = keep.sum(-1, keepdim=True).clamp(min=1) - 1
    keep = values >= values.gather(-1, last_kept)
    vocabulary_order = torch.where(keep, ids, scaled.shape[-1]).sort(dim=-1)  # kept first, by id
    kept_probs = torch.where(keep, probs, 0.0).gather(-1, vocabulary_order.indices)
    return vocabulary_order.values, kept_probs


def vocabulary_probabilities(scaled: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """softmax(scaled) over the whole vocabulary (B, V), with tokens below each row's min-p
    fraction of its most likely token set to 0."""
    probs = torch.softmax(scaled, dim=-1)
    if bool((min_p > 0).any()):
        floor = min_p[:, None] * probs.max(dim=-1, keepdim=True).values
        probs = torch.where(probs < floor, 0.0, probs)
    return probs


def _draw(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
          uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row (B,) from its filtered distribution; see the module docstring."""
    ranked_rows = (top_k > 0) | (top_p < 1)  # (B,)
    tokens = None
    if not bool(ranked_rows.all()):
        tokens = inverse_cdf_by_chunks(vocabulary_probabilities(scaled, min_p), uniforms)
    if bool(ranked_rows.any()):
        ids, probs = ranked_candidates(scaled, top_k, top_p, min_p)
        from_candidates = ids.gather(-1, inverse_cdf(probs, uniforms)[:, None])[:, 0]
        tokens = from_candidates if tokens is None else torch.where(ranked_rows, from_candidates, tokens)
    return tokens


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
    safe_temperature = torch.where(greedy, torch.ones_like(temperature), temperature)  # (B,)
    scaled = logits / safe_temperature[:, None]  # (B, V), a new tensor: ours to change
    # Before the penalty. log_softmax is one fused pass; logsumexp is several on the CPU.
    log_probs = torch.log_softmax(scaled, dim=-1) if want_logprobs else None  # (B, V)
    if bool((repetition_penalty != 1).any()):
        penalise_seen_(scaled, seen, repetition_penalty)
    if bool(greedy.all()):
        tokens = scaled.argmax(dim=-1)
    else:
        tokens = _draw(scaled, top_k, top_p, min_p, row_uniforms(seeds, steps))
        if bool(greedy.any()):
            tokens = torch.where(greedy, scaled.argmax(dim=-1), tokens)
    logprobs = None
    if want_logprobs:
        logprobs = log_probs.gather(-1, tokens[:, None])[:, 0]
    return tokens, logprobs

"""Teacher-forced decoding through the C++ decode step: the logits a served model gives
after each token of a known text.

Measuring what quantized weights cost in quality needs the logits the chat's decode
steps produce, not those of a forward through PyTorch (which reads the fp32 weights):
`forced_logits` feeds each window's tokens one per step, every window a row of the same
step, through `llama_decode` with the weights of a quantized copy or the fp32 ones, into
a cache of its own.

Not here: the metrics (chat_tui/benchmarks/quant_quality.py), sampling, the engine's
scheduling.
"""

from __future__ import annotations

import torch

from engine.kernels import llama_decode
from engine.kernels.quantized_copy import QuantizedCopy
from engine.models.llama import LlamaForCausalLM


@torch.inference_mode()
def forced_logits(
    model: LlamaForCausalLM, windows: list[list[int]], copy: QuantizedCopy | None, block_size: int = 16,
) -> torch.Tensor:
    """Logits (W, T, V) after each of T tokens of each of W windows of equal length T, decoded
    one token per step through the C++ step from `copy`'s matrices (fp32 ones when None).
    ValueError for windows of unequal length; RuntimeError where the step is unavailable
    for that type here."""
    lengths = {len(window) for window in windows}
    if len(lengths) != 1:
        raise ValueError(f"windows must be of one length, got lengths {sorted(lengths)}")
    quant = "none" if copy is None else copy.quant
    if not llama_decode.available(quant):
        raise RuntimeError(f"the C++ decode step with {quant} weights is not available on this machine")
    table = llama_decode.weight_table(model, copy)
    if table is None:
        raise RuntimeError("the C++ decode step does not cover this model")
    config = model.config
    rows, length = len(windows), lengths.pop()
    blocks_per_row = -(-length // block_size)
    shape = (config.num_hidden_layers, rows * blocks_per_row, block_size, config.num_key_value_heads, config.head_dim)
    k_cache, v_cache = torch.zeros(shape), torch.zeros(shape)
    block_tables = torch.arange(rows * blocks_per_row).view(rows, blocks_per_row)
    tokens = torch.tensor(windows)  # (W, T)
    logits = torch.empty(rows, length, config.vocab_size)
    for t in range(length):
        positions = torch.full((rows,), t, dtype=torch.int64)
        logits[:, t] = llama_decode.decode_logits(model, table, tokens[:, t], positions, block_tables, k_cache, v_cache)
    return logits

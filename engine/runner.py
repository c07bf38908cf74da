"""The model runner: the only engine code that touches tensors.

It owns the paged KV cache (k and v per layer, `num_blocks x block_size` slots), per-row
buffers for the running batch (block tables, context lengths, sampling settings, the
tokens each row has seen for the repetition penalty), and runs three things: prefill of
a batch of prompts, one decode step for a whole batch, and sampling. Which rows run and
which blocks they own is decided by the scheduler and the block manager; the runner only
mirrors their decisions into tensors.

Which decode path a step takes: the C++ step (engine/kernels/llama_decode.py) for an fp32 Llama
on the CPU, from the weights' quantized copy when the engine has one
(engine/kernels/quantized_copy.py); with `decode_graphs` (the engine's default on CUDA), fixed-shape steps replayed
from CUDA graphs (engine/graphed_decode.py); otherwise the model's own forward. All three
read the same cache; from fp32 weights they give the same tokens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.graphed_decode import GraphedDecode
from engine.kernels import llama_decode
from engine.kernels.cpu_linear import fast_linear, warm_up
from engine.kernels.quantized_copy import QuantizedCopy
from engine.models.llama import causal_attention
from engine.sampling import SamplingParams
from engine.sampling_ops import sample_next_tokens


@dataclass
class _PrefillCache:
    """Attention for prompts processed from scratch, packed end to end into one sequence:
    write their k/v, then attend causally within each prompt (never across prompts)."""

    runner: "ModelRunner"
    slots: torch.Tensor  # (T,) flat slot of each packed token
    lengths: list[int]  # the prompts' lengths, in packing order (they sum to T)

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
    ) -> torch.Tensor:
        r = self.runner
        r.k_flat[layer][self.slots] = k[0].transpose(0, 1)  # (T, Hkv, D)
        r.v_flat[layer][self.slots] = v[0].transpose(0, 1)
        # One causal attention per prompt: a packed (T, T) mask would cost T^2 memory and
        # work for nothing, and the products around attention (the bulk of the FLOPs)
        # already run on every prompt's tokens at once.
        parts = zip(q.split(self.lengths, dim=2), k.split(self.lengths, dim=2), v.split(self.lengths, dim=2))
        return torch.cat([causal_attention(qp, kp, vp, None, window) for qp, kp, vp in parts], dim=2)


@dataclass
class _DecodeCache:
    """Attention for one new token per row over that row's cached history."""

    runner: "ModelRunner"
    new_slots: torch.Tensor  # (B,) where each row's new token goes
    blocks: torch.Tensor  # (B * nb,) block ids covering every row's history, row-major
    mask: torch.Tensor  # (B, 1, 1, nb * block_size) True where a slot holds a real token
    positions: torch.Tensor  # (B,) position of each row's new token

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
    ) -> torch.Tensor:
        r = self.runner
        mask = self.mask
        if window is not None:  # a sliding-window layer sees its last `window` positions
            span = torch.arange(mask.shape[-1], device=mask.device)
            mask = mask & (span[None] > (self.positions - window)[:, None])[:, None, None]
        r.k_flat[layer][self.new_slots] = k[:, :, 0]  # (B, Hkv, D)
        r.v_flat[layer][self.new_slots] = v[:, :, 0]
        B, span = self.mask.shape[0], self.mask.shape[-1]
        # index_select on the block axis: one contiguous copy per block, much cheaper than
        # advanced indexing, whose parallel kernel stalls when the CPU is shared.
        keys = r.k_cache[layer].index_select(0, self.blocks).view(B, span, r.num_kv_heads, r.head_dim)
        values = r.v_cache[layer].index_select(0, self.blocks).view(B, span, r.num_kv_heads, r.head_dim)
        return F.scaled_dot_product_attention(
            q, keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask, enable_gqa=True
        )  # (B, Hq, 1, D)


# The most rows the C++ decode step takes; larger batches take the model's own forward
# with oneDNN's products. Up to here the C++ step decoded faster (docs/performance.md,
# Engine notes); beyond 128 it has not been measured (there the rows' inputs to the
# 1536-wide down projection alone pass 1 MB, a core's L2).
DECODE_KERNEL_MAX_ROWS = 128


class ModelRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        num_blocks: int,
        block_size: int,
        max_rows: int,
        max_blocks_per_seq: int,
        device: torch.device,
        dtype: torch.dtype,
        fast_cpu_kernels: bool = True,
        decode_graphs: bool = False,
        quantized: QuantizedCopy | None = None,
    ) -> None:
        """num_blocks: cache blocks the block manager hands out (ids 0..num_blocks-1); the
        runner keeps one more, a scratch block for the padding rows of graphed steps.
        decode_graphs: decode through engine/graphed_decode.py (CUDA graphs on a GPU).
        quantized: decode from this quantized copy of the weights (C++ step only)."""
        config = model.config
        self.model = model
        self.quantized = quantized
        self.device = device
        self.dtype = dtype
        self.fast_cpu_kernels = fast_cpu_kernels
        self.block_size = block_size
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.vocab_size = config.vocab_size
        layers = config.num_hidden_layers
        self.scratch_block = num_blocks
        shape = (layers, num_blocks + 1, block_size, self.num_kv_heads, self.head_dim)
        # torch.empty: pages are committed by the OS only as blocks are first used. Unused
        # slots must never hold NaN (masked attention still multiplies them by zero), so
        # blocks are zeroed when allocated and a row's unused table entries point at its
        # own first block.
        self.k_cache = torch.empty(shape, dtype=dtype, device=device)
        self.v_cache = torch.empty(shape, dtype=dtype, device=device)
        self.k_flat = self.k_cache.view(layers, -1, self.num_kv_heads, self.head_dim)
        self.v_flat = self.v_cache.view(layers, -1, self.num_kv_heads, self.head_dim)
        self.zero_blocks([self.scratch_block])
        # Per-row state of the running batch.
        self.block_tables = torch.zeros(max_rows, max_blocks_per_seq, dtype=torch.long, device=device)
        self.context_lens = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.seen = torch.zeros(max_rows, self.vocab_size, dtype=torch.bool, device=device)
        self.temperature = torch.zeros(max_rows, device=device)
        self.top_k = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.top_p = torch.ones(max_rows, device=device)
        self.min_p = torch.zeros(max_rows, device=device)
        self.repetition_penalty = torch.ones(max_rows, device=device)
        self.seeds = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.steps = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.graphed = (
            GraphedDecode(self._decode_step, model, max_rows, max_blocks_per_seq, self.vocab_size, self.scratch_block, device)
            if decode_graphs else None
        )

    # --- row bookkeeping -------------------------------------------------------------

    def init_row(self, row: int, params: SamplingParams, seed: int, block_table: list[int]) -> None:
        self.temperature[row] = params.temperature
        self.top_k[row] = params.top_k
        self.top_p[row] = params.top_p
        self.min_p[row] = params.min_p
        self.repetition_penalty[row] = params.repetition_penalty
        self.seeds[row] = seed
        self.steps[row] = 0
        self.block_tables[row] = block_table[0]
        self.block_tables[row, : len(block_table)] = torch.tensor(block_table, dtype=torch.long)

    def set_seen(self, row: int, token_ids: list[int]) -> None:
        self.seen[row] = False
        if token_ids:
            self.seen[row, torch.tensor(token_ids, device=self.device)] = True

    def copy_row_seen(self, src: int, dst: int) -> None:
        self.seen[dst] = self.seen[src]

    def set_block(self, row: int, index: int, block: int) -> None:
        self.block_tables[row, index] = block

    def set_context_len(self, row: int, length: int) -> None:
        self.context_lens[row] = length

    def zero_blocks(self, blocks: list[int]) -> None:
        index = torch.tensor(blocks, dtype=torch.long, device=self.device)
        self.k_cache[:, index] = 0
        self.v_cache[:, index] = 0

    def copy_block(self, src: int, dst: int) -> None:
        self.k_cache[:, dst] = self.k_cache[:, src]
        self.v_cache[:, dst] = self.v_cache[:, src]

    # --- forward passes ----------------------------------------------------------------

    def _linear_context(self) -> contextlib.AbstractContextManager:
        """Faster linear kernels for an fp32 model on the CPU (engine/kernels/cpu_linear.py)."""
        if self.fast_cpu_kernels:
            return fast_linear(self.device, self.dtype)
        return contextlib.nullcontext()

    def _decode_kernel_weights(self, rows: int) -> torch.Tensor | None:
        """The weight table for the C++ decode step (engine/kernels/llama_decode.py) when it covers
        this step: an fp32 Llama on the CPU as the model is now (LoRA may have been added
        since), at most DECODE_KERNEL_MAX_ROWS rows, and the kernel built here. Its matrices
        are the quantized copy's when there is one and its type passed the kernel's probe
        here (else fp32). None when the step is not covered."""
        if not self.fast_cpu_kernels or rows > DECODE_KERNEL_MAX_ROWS or self.device.type != "cpu":
            return None
        if not llama_decode.available():
            return None
        quantized = self.quantized if self.quantized and llama_decode.available(self.quantized.quant) else None
        return llama_decode.weight_table(self.model, quantized)

    def warm_up(self, batch_size: int | None = None, context: int | None = None) -> None:
        """Build and probe the C++ CPU kernels now rather than in the first reply: the
        few-row product (prefill's LM head, models the decode step does not cover) and the
        decode step. With `batch_size` and `context` (tokens), also record the CUDA graphs
        of decode steps of that many rows up to that length."""
        if self.fast_cpu_kernels:
            warm_up(self.device, self.dtype)
            if self.device.type == "cpu":
                self._decode_kernel_weights(1)  # builds and probes the kernel, makes the quantized copy
        if self.graphed is not None and batch_size is not None and context is not None:
            with torch.inference_mode():
                self.graphed.prepare(batch_size, -(-context // self.block_size))

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], block_tables: list[list[int]]) -> torch.Tensor:
        """Run whole prompts, filling their cache blocks; returns each prompt's last-position
        logits (P, V).

        The prompts are packed into one sequence, so every product runs once over all their
        tokens: oneDNN's products are far more efficient with hundreds of rows than with
        tens."""
        lengths = [len(p) for p in prompts]
        ids = torch.tensor([[t for p in prompts for t in p]], dtype=torch.long, device=self.device)  # (1, T)
        prompt_positions = [torch.arange(n, device=self.device) for n in lengths]
        positions = torch.cat(prompt_positions)  # (T,)
        slots = torch.cat([self._slots(table, at) for table, at in zip(block_tables, prompt_positions)])
        last = torch.tensor(lengths, device=self.device).cumsum(0) - 1  # (P,) each prompt's last token
        with self._linear_context():
            hidden = self.model.hidden_states(ids, positions[None], cache=_PrefillCache(self, slots, lengths))
            return self.model.lm_head(hidden[0, last]).float()  # (P, V)

    def _slots(self, block_table: list[int], positions: torch.Tensor) -> torch.Tensor:
        """The flat cache slot of each position of a sequence with this block table."""
        table = torch.tensor(block_table, dtype=torch.long, device=self.device)
        return table[positions // self.block_size] * self.block_size + positions % self.block_size

    @torch.inference_mode()
    def decode(self, rows: torch.Tensor, token_ids: torch.Tensor, num_blocks: int) -> torch.Tensor:
        """One step for every row in `rows` (B,), feeding `token_ids` (B,); returns logits (B, V).
        num_blocks: the most cache blocks any of these rows holds, the fed token's included
        (the engine knows it without reading the device)."""
        positions = self.context_lens[rows]  # (B,) position of the fed token
        addresses = self._decode_kernel_weights(rows.numel())
        if addresses is not None:
            logits = llama_decode.decode_logits(
                self.model, addresses, token_ids, positions, self.block_tables[rows], self.k_cache, self.v_cache
            )
        elif self.graphed is not None:
            logits = self.graphed(token_ids, positions, self.block_tables[rows, :num_blocks])
        else:
            logits = self._decode_step(token_ids, positions, self.block_tables[rows, :num_blocks])
        self.context_lens[rows] += 1
        return logits

    def _decode_step(self, token_ids: torch.Tensor, positions: torch.Tensor, block_tables: torch.Tensor) -> torch.Tensor:
        """The model's own forward for one decode step of B rows, attention over the gathered
        cache blocks of `block_tables` (B, nb). Reads no value on the host, so a CUDA graph
        can record it (engine/graphed_decode.py)."""
        new_blocks = block_tables.gather(1, (positions // self.block_size)[:, None])[:, 0]
        new_slots = new_blocks * self.block_size + positions % self.block_size
        span = torch.arange(block_tables.shape[1] * self.block_size, device=self.device)
        mask = (span[None] <= positions[:, None])[:, None, None]  # (B, 1, 1, S)
        cache = _DecodeCache(self, new_slots, block_tables.reshape(-1), mask, positions)
        with self._linear_context():
            hidden = self.model.hidden_states(token_ids[:, None], positions[:, None], cache=cache)
            return self.model.lm_head(hidden[:, -1]).float()  # (B, V)

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, rows: torch.Tensor, want_logprobs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next token per row (B,), and its log-probability when asked; marks it seen."""
        tokens, logprobs = sample_next_tokens(
            logits,
            temperature=self.temperature[rows],
            top_k=self.top_k[rows],
            top_p=self.top_p[rows],
            min_p=self.min_p[rows],
            repetition_penalty=self.repetition_penalty[rows],
            seen=self.seen[rows],
            seeds=self.seeds[rows],
            steps=self.steps[rows],
            want_logprobs=want_logprobs,
        )
        self.seen[rows, tokens] = True
        self.steps[rows] += 1
        return tokens, logprobs

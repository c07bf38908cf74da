"""Decode steps of a Llama-family model on the CPU through the C++ kernel `llama_decode.cpp`.

A decode step reads every weight once and does little arithmetic per weight, so its
speed is memory bandwidth plus per-operation overhead. Through PyTorch modules a step is
about 40 calls per layer (norms, rotary, products, attention, activation, residuals);
at a chat's few rows their dispatch costs about as much as the weight reads. The kernel
runs the whole step (every layer, the final norm and the LM head) in one call: one
OpenMP parallel region whose threads split each operation and meet at a barrier before
the next, with the few-row product of `cpu_kernels.h` for every weight and attention read
straight from the runner's paged KV cache through the rows' block tables.

A row's result is the same bits whatever other rows share the step, so batched greedy
decoding picks what each sequence alone would pick.

What qualifies (`weight_addresses` is not None): a `LlamaForCausalLM` in fp32 on the CPU
whose projections are plain `nn.Linear`, norms plain `RMSNorm`, and weights contiguous;
anything else (LoRA adapters, int8 layers, PaLM blocks, other devices or dtypes) takes
the model's own forward. Weights are read where they are at each step, never copied, so
a model trained between engine steps is used as it is now.

If the C++ library cannot be built (engine/kernels/native_library.py), or the kernel disagrees
with the model's own forward on a probe model, `available()` is False and the runner
uses the model's forward.

Not here: prefill (PyTorch), the KV cache's bookkeeping, sampling.
"""

from __future__ import annotations

import ctypes
import logging
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from engine.config import ModelConfig
from engine.kernels import native_library
from engine.kernels.built_once import BuiltOnce
from engine.models.llama import LlamaForCausalLM, RMSNorm
from engine.module_changes import Placement

log = logging.getLogger(__name__)

def _readable(tensor: torch.Tensor | None) -> bool:
    """Whether the kernel can read the tensor in place."""
    return tensor is not None and tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous()


def _linear_tensors(linear: nn.Module) -> list[torch.Tensor | None] | None:
    """[weight, bias or None] of a plain `nn.Linear` the kernel can read; None otherwise."""
    if type(linear) is not nn.Linear or not _readable(linear.weight):
        return None
    if linear.bias is not None and not _readable(linear.bias):
        return None
    return [linear.weight, linear.bias]


def _norm_tensor(norm: nn.Module) -> torch.Tensor | None:
    return norm.weight if type(norm) is RMSNorm and _readable(norm.weight) else None


def _kernel_tensors(model: nn.Module) -> list[torch.Tensor | None] | None:
    """The tensors of the kernel's weight table in `llama_decode.cpp`'s `Slot` order (None
    for a missing bias), or None when the model does not qualify (module docstring)."""
    if type(model) is not LlamaForCausalLM:
        return None
    tensors: list[torch.Tensor | None] = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        parts = [_linear_tensors(m) for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
                                              mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
        norms = [_norm_tensor(layer.input_layernorm), _norm_tensor(layer.post_attention_layernorm)]
        if None in parts or None in norms:
            return None
        (q, bq), (k, bk), (v, bv), (o, bo), (g, bg), (u, bu), (d, bd) = parts  # type: ignore[misc]
        tensors += [norms[0], q, k, v, bq, bk, bv, o, bo, norms[1], g, u, d, bg, bu, bd]
    final, head = _norm_tensor(model.model.norm), _linear_tensors(model.lm_head)
    if final is None or head is None or head[1] is not None:
        return None
    return tensors + [final, head[0]]


@dataclass
class _WeightTable:
    placement: Placement  # of the tensors when it was built
    table: torch.Tensor  # int64, their addresses for the kernel


_tables: weakref.WeakKeyDictionary[nn.Module, _WeightTable] = weakref.WeakKeyDictionary()


def weight_addresses(model: nn.Module) -> torch.Tensor | None:
    """The kernel's weight table for `model` as it is now (int64: per layer the addresses
    in `llama_decode.cpp`'s `Slot` order, then the final norm and the LM head), or None
    when the model does not qualify (see the module docstring).

    Rebuilding it walks every module, too slow for every step, so it is kept
    while no module anywhere has registered a new submodule or parameter and every
    tensor in it still has its data where it had (`.to()`, `.double()` or assigning
    `.data` moves it); in-place updates such as an optimizer's keep it valid."""
    cached = _tables.get(model)
    if cached is not None and cached.placement.holds():
        return cached.table
    tensors = _kernel_tensors(model)
    if tensors is None:
        _tables.pop(model, None)
        return None
    placement = Placement.now(tensors)  # address 0, a null pointer, for a missing bias
    table = _WeightTable(placement, torch.tensor(placement.addresses, dtype=torch.int64))
    _tables[model] = table
    return table.table


def _call(
    function, model: LlamaForCausalLM, addresses: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor,
    block_tables: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
) -> torch.Tensor:
    config: ModelConfig = model.config
    rows = token_ids.numel()
    x = model.model.embed_tokens(token_ids.view(-1)).contiguous()  # (B, d), a fresh tensor the kernel overwrites
    cos, sin = model.model.rotary(positions.view(rows, 1), x.dtype)  # (B, 1, 1, D)
    cos, sin = cos.reshape(rows, -1).contiguous(), sin.reshape(rows, -1).contiguous()
    tables = block_tables.contiguous()
    positions = positions.contiguous()
    _, _, block_size, _, _ = k_cache.shape
    dims = torch.tensor(
        [rows, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
         config.num_key_value_heads, config.head_dim, config.intermediate_size, config.vocab_size,
         block_size, tables.shape[1], int(positions.max()) + 1],
        dtype=torch.int64,
    )
    logits = torch.empty(rows, config.vocab_size, dtype=torch.float32)
    # ctypes releases the GIL for the call; the kernel's OpenMP threads are torch's count.
    function(
        dims.data_ptr(), config.rms_norm_eps, addresses.data_ptr(), x.data_ptr(), cos.data_ptr(), sin.data_ptr(),
        k_cache.data_ptr(), v_cache.data_ptr(), k_cache[0].numel(), tables.data_ptr(), positions.data_ptr(),
        logits.data_ptr(), torch.get_num_threads(),
    )
    return logits


# The probe's model: small, with q/k/v biases and grouped-query heads.
PROBE_CONFIG = ModelConfig(
    vocab_size=67, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
    num_key_value_heads=2, head_dim=16, qkv_bias=True, max_position_embeddings=64,
)


def _probe(function, config: ModelConfig = PROBE_CONFIG, block_size: int = 16) -> bool:
    """Whether the kernel agrees with the model's own forward on a small random model:
    two rows with blocks out of order, decoded one token at a time into a second block,
    against a full forward's logits at every position."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # building the model draws from torch's global RNG: leave the caller's alone
        model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    length = min(block_size + 5, 2 * block_size)
    tokens = torch.randint(0, config.vocab_size, (2, length), generator=generator)
    tables = torch.tensor([[3, 0], [1, 2]])
    shape = (config.num_hidden_layers, 4, block_size, config.num_key_value_heads, config.head_dim)
    k_cache, v_cache = torch.zeros(shape), torch.zeros(shape)
    addresses = weight_addresses(model)
    with torch.inference_mode():
        want = model(tokens)  # (2, T, V)
        for t in range(length):
            got = _call(function, model, addresses, tokens[:, t], torch.tensor([t, t]), tables, k_cache, v_cache)
            if not torch.allclose(got, want[:, t], rtol=1e-4, atol=1e-4):
                return False
    return True


def _load() -> ctypes._CFuncPtr | None:
    function = native_library.function("llama_decode", [
        ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int,
    ])
    if function is None:
        return None
    if not _probe(function):
        log.warning("the C++ decode kernel disagreed with the model's forward on this machine; decode uses PyTorch")
        return None
    return function


_function: BuiltOnce[ctypes._CFuncPtr] = BuiltOnce(_load)


def available() -> bool:
    """Whether the decode kernel works on this machine; builds and probes it on the first call."""
    return _function.get() is not None


def decode_logits(
    model: LlamaForCausalLM, addresses: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor,
    block_tables: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
) -> torch.Tensor:
    """One decode step for B rows: feed `token_ids` (B,) at `positions` (B,), each row's
    cache being its `block_tables` row (B, max_blocks) into `k_cache`/`v_cache` (layers,
    blocks, block_size, kv_heads, head_dim), where the new k/v are written. Returns logits
    (B, V). Call only when `available()`, with `addresses = weight_addresses(model)`."""
    function = _function.result
    return _call(function, model, addresses, token_ids, positions, block_tables, k_cache, v_cache)

"""Decode steps of a Llama-family model on the CPU through the C++ kernel `llama_decode.cpp`.

A decode step reads every weight once and does little arithmetic per weight, so its
speed is memory bandwidth plus per-operation overhead. Through PyTorch modules a step is
about 40 calls per layer (norms, rotary, products, attention, activation, residuals);
at a chat's few rows their dispatch costs about as much as the weight reads. The kernel
runs the whole step (every layer, the final norm and the LM head) in one call: one
OpenMP parallel region whose threads split each operation and meet at a barrier before
the next, with the few-row product of `cpu_kernels.h` for every weight and attention read
straight from the runner's paged KV cache through the rows' block tables. The weight
matrices may instead be a quantized copy's (engine/kernels/quantized_copy.py), 8-bit or
4-bit blocks the product of `cpu_quant.h` reads as they are; then a quarter or an eighth
of the bytes stream in per step.

A row's result is the same bits whatever other rows share the step, so batched greedy
decoding picks what each sequence alone would pick.

What qualifies (`weight_table` is not None): a `LlamaForCausalLM` in fp32 on the CPU
whose projections are plain `nn.Linear`, norms plain `RMSNorm`, and weights contiguous;
anything else (LoRA adapters, PaLM blocks, other devices or dtypes) takes
the model's own forward. Weights are read where they are at each step, never copied, so
a model trained between engine steps is used as it is now (a quantized copy is made
again for a changed matrix).

If the C++ library cannot be built (engine/kernels/native_library.py), or the kernel disagrees
with the model's own forward on a probe model (engine/kernels/decode_probe.py),
`available()` is False and the runner uses the model's forward; `available(quant)`
says the same of the quantized products of one type, and without them the runner
decodes from the fp32 weights.

Not here: prefill (PyTorch), the KV cache's bookkeeping, sampling.
"""

from __future__ import annotations

import ctypes
import logging
import weakref
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from engine.config import ModelConfig
from engine.kernels import decode_probe, native_library
from engine.kernels.built_once import BuiltOnce
from engine.kernels.quant_types import QUANT_TYPES
from engine.kernels.quantized_copy import QuantizedCopy
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


# Where each layer's weight matrices are among its kernel tensors (`Slot` order):
# q, k, v, o, gate, up, down.
MATRIX_SLOTS = (1, 2, 3, 7, 10, 11, 12)
PER_LAYER = 16


def _matrices(model: nn.Module, tensors: list[torch.Tensor | None]) -> list[tuple[int, str, torch.Tensor, bool]]:
    """(table index, parameter name, tensor, is the LM head) of every weight matrix in the table."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    layers = (len(tensors) - 2) // PER_LAYER
    indices = [layer * PER_LAYER + slot for layer in range(layers) for slot in MATRIX_SLOTS] + [len(tensors) - 1]
    return [(i, names[id(tensors[i])], tensors[i], i == len(tensors) - 1) for i in indices]


@dataclass
class _WeightTable:
    placement: Placement  # of the fp32 tensors when it was built
    copy: QuantizedCopy | None  # where the quantized matrices came from
    tracked: list[torch.Tensor]  # with a copy: the fp32 matrices it stands for (those that count writes)
    versions: list[int]  # their counts of in-place writes then
    table: torch.Tensor  # int64 (entries, 3) for the kernel

    def holds(self, copy: QuantizedCopy | None) -> bool:
        """Still right for `copy`: no tensor moved, and no matrix the copy stands for was
        written to since (checked per step, so only a list of counters is read)."""
        return (self.copy is copy and self.placement.holds()
                and [tensor._version for tensor in self.tracked] == self.versions)


_tables: weakref.WeakKeyDictionary[nn.Module, _WeightTable] = weakref.WeakKeyDictionary()


def weight_table(model: nn.Module, copy: QuantizedCopy | None = None) -> torch.Tensor | None:
    """The kernel's weight table for `model` as it is now, or None when the model does not
    qualify (see the module docstring): int64 (entries, 3), per layer the entries in
    `llama_decode.cpp`'s `Slot` order, then the final norm and the LM head; an entry is
    (address, scales' address, kind), the last two 0 for fp32. With `copy`, the weight
    matrices are its quantized ones.

    Rebuilding it walks every module, too slow for every step, so it is kept
    while no module anywhere has registered a new submodule or parameter and every
    tensor in it still has its data where it had (`.to()`, `.double()` or assigning
    `.data` moves it); in-place updates such as an optimizer's keep it valid, and a
    quantized copy is made again for the matrices they changed."""
    cached = _tables.get(model)
    if cached is not None and cached.holds(copy):
        return cached.table
    tensors = _kernel_tensors(model)
    if tensors is None:
        _tables.pop(model, None)
        return None
    placement = Placement.now(tensors)  # address 0, a null pointer, for a missing bias
    entries = [[address, 0, 0] for address in placement.addresses]
    matrices = _matrices(model, tensors)
    quantized = []
    if copy is not None:
        for index, name, weight, is_head in matrices:
            matrix = copy.matrix(name, weight, is_head)
            entries[index] = [matrix.data.data_ptr(), matrix.scales.data_ptr(), matrix.kind]
            quantized.append(matrix)
    addresses = torch.tensor(entries, dtype=torch.int64)
    addresses.quantized = quantized  # the table keeps what it points at alive, wherever it is held
    # Inference tensors count no writes (and are not trained): nothing to watch.
    tracked = [weight for _, _, weight, _ in matrices if not weight.is_inference()] if copy is not None else []
    table = _WeightTable(placement, copy, tracked, [tensor._version for tensor in tracked], addresses)
    _tables[model] = table
    return table.table


def _call(
    function, model: LlamaForCausalLM, table: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor,
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
        dims.data_ptr(), config.rms_norm_eps, table.data_ptr(), x.data_ptr(), cos.data_ptr(), sin.data_ptr(),
        k_cache.data_ptr(), v_cache.data_ptr(), k_cache[0].numel(), tables.data_ptr(), positions.data_ptr(),
        logits.data_ptr(), torch.get_num_threads(),
    )
    return logits


def _load() -> ctypes._CFuncPtr | None:
    function = native_library.function("llama_decode", [
        ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int,
    ])
    if function is None:
        return None
    if not decode_probe.probe(partial(_call, function)):
        log.warning("the C++ decode kernel disagreed with the model's forward on this machine; decode uses PyTorch")
        return None
    return function


_function: BuiltOnce[ctypes._CFuncPtr] = BuiltOnce(_load)


def _probe_quantized(quant: str) -> bool | None:
    if not decode_probe.probe(partial(_call, _function.result), quant):
        log.warning("the C++ decode kernel's %s products disagreed with PyTorch's on this machine; "
                    "decode uses fp32 weights", quant)
        return None
    return True


_quantized_ok: dict[str, BuiltOnce[bool]] = {quant: BuiltOnce(partial(_probe_quantized, quant)) for quant in QUANT_TYPES[1:]}


def available(quant: str = "none") -> bool:
    """Whether the decode kernel works on this machine, with weights of type `quant`;
    builds and probes it on the first call (for each type)."""
    if _function.get() is None:
        return False
    return quant == "none" or _quantized_ok[quant].get() is not None


def decode_logits(
    model: LlamaForCausalLM, table: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor,
    block_tables: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
) -> torch.Tensor:
    """One decode step for B rows: feed `token_ids` (B,) at `positions` (B,), each row's
    cache being its `block_tables` row (B, max_blocks) into `k_cache`/`v_cache` (layers,
    blocks, block_size, kv_heads, head_dim), where the new k/v are written. Returns logits
    (B, V). Call only when `available()`, with `table = weight_table(model, copy)`."""
    function = _function.result
    return _call(function, model, table, token_ids, positions, block_tables, k_cache, v_cache)

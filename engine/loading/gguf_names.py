"""How llama.cpp names and orders a Llama-family model's tensors, both ways.

One table maps each HF parameter name to its GGUF tensor name (`token_embd.weight`,
`blk.N.attn_q.weight`, ...). The GGUF reader (engine/loading/gguf_file.py) renames a
file's tensors to HF names with it, and the exporter (engine/export/gguf.py) names what
it writes. llama.cpp's converter also reorders the query and key rows of each head for
its rotary layout: `to_gguf_layout` does that to a tensor that needs it and
`from_gguf_layout` undoes it.

Not here: reading or writing files, dequantizing, or what a caller does with a name that
has no counterpart (None here; each caller raises its own error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# HF name within a layer (model.layers.N.<part>) -> GGUF name within a block (blk.N.<part>)
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


@dataclass(frozen=True)
class _Renaming:
    """One direction of the table."""

    whole: dict[str, str]  # names outside the layers
    layer: re.Pattern[str]  # a layer tensor's name: (layer index, part)
    parts: dict[str, str]  # a part's name on the other side
    prefix: str  # the other side's layer prefix, {} for the index

    def __call__(self, name: str) -> str | None:
        if name in self.whole:
            return self.whole[name]
        match = self.layer.match(name)
        if match and match.group(2) in self.parts:
            return self.prefix.format(match.group(1)) + self.parts[match.group(2)]
        return None


def _inverse(table: dict[str, str]) -> dict[str, str]:
    return {value: key for key, value in table.items()}


_TO_GGUF = _Renaming(_GLOBAL_NAMES, re.compile(r"^model\.layers\.(\d+)\.(.+)$"), _LAYER_NAMES, "blk.{}.")
_TO_HF = _Renaming(_inverse(_GLOBAL_NAMES), re.compile(r"^blk\.(\d+)\.(.+)$"), _inverse(_LAYER_NAMES), "model.layers.{}.")


def gguf_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name for an HF parameter name; None for one it has no place for."""
    return _TO_GGUF(hf_name)


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF parameter name of a GGUF tensor; None when there is none."""
    return _TO_HF(gguf_name)


class HeadCounts(Protocol):
    """What the row order depends on; an engine `ModelConfig` or a transformers config."""

    num_attention_heads: int
    num_key_value_heads: int


def permute_qk(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's converter order: within each head, rows (pairs interleaved) for its rope."""
    shape = weight.shape
    return weight.reshape(num_heads, 2, shape[0] // num_heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def unpermute_qk(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """The inverse of `permute_qk`: back to HF's half-split rotary order."""
    shape = weight.shape
    return weight.reshape(num_heads, shape[0] // num_heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _reordered_heads(hf_name: str, heads: HeadCounts) -> int | None:
    """How many heads' rows llama.cpp reorders in this tensor: the query projection's
    (weight and bias) and the key projection's; None for every other tensor."""
    if ".self_attn.q_proj." in hf_name:
        return heads.num_attention_heads
    if ".self_attn.k_proj." in hf_name:
        return heads.num_key_value_heads
    return None


def to_gguf_layout(hf_name: str, values: np.ndarray, heads: HeadCounts) -> np.ndarray:
    """The HF tensor `hf_name` in the row order llama.cpp expects."""
    count = _reordered_heads(hf_name, heads)
    return values if count is None else permute_qk(values, count)


def from_gguf_layout(hf_name: str, values: np.ndarray, heads: HeadCounts) -> np.ndarray:
    """A GGUF file's tensor, whose HF name is `hf_name`, back in HF's row order."""
    count = _reordered_heads(hf_name, heads)
    return values if count is None else unpermute_qk(values, count)

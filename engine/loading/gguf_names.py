"""How llama.cpp names and lays out each architecture's tensors, both ways.

A `GGUFLayout` per GGUF architecture (`general.architecture`) says which GGUF tensor
name (`token_embd.weight`, `blk.N.attn_q.weight`, ...) holds which HF parameter and how
the file's values differ from HF's:

- llama: llama.cpp's converter reorders the query and key rows of each head for its
  interleaved rotary layout (`permute_qk`); qwen2, gemma3 and phi3 use the half-split
  ("NeoX") layout that HF uses, so their rows are as HF has them.
- gemma3: Gemma's norms scale by (1 + weight); the file stores 1 + weight, so that
  llama.cpp multiplies by it directly (`norm_offset`).
- phi3: the query, key and value projections are one fused `attn_qkv` matrix, and the
  gate and up projections one `ffn_up` matrix (gate rows first); `fused` names the parts.

The GGUF reader (engine/loading/gguf_file.py) renames a file's tensors to HF names with
these, and the exporter (engine/export/gguf.py) names what it writes.

Not here: reading or writing files, dequantizing, splitting fused tensors (the reader
does that, knowing the sizes), or what a caller does with a name that has no
counterpart (None here; each caller raises its own error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

# HF name within a layer (model.layers.N.<part>) -> GGUF name within a block (blk.N.<part>)
_ATTENTION_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
}
_MLP_NAMES = {
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_LLAMA_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    **_ATTENTION_NAMES,
    **_MLP_NAMES,
}
# Gemma 3 normalises each sub-block's input and output; llama.cpp's "ffn_norm" is the
# norm before the feed-forward network, which HF calls pre_feedforward_layernorm.
_GEMMA3_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    **_ATTENTION_NAMES,
    **_MLP_NAMES,
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


@dataclass(frozen=True)
class _Renaming:
    """One direction of a table."""

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


_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class GGUFLayout:
    """How one GGUF architecture stores an engine model's tensors (module docstring)."""

    architecture: str  # general.architecture
    layer_names: dict[str, str]  # HF part -> GGUF part, within a layer
    permutes_rotary_rows: bool  # llama.cpp reorders q/k rows (the "llama" architecture)
    norm_offset: float = 0.0  # file value = HF value + offset, for every norm weight
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)  # GGUF part -> HF parts, stacked by rows

    @cached_property
    def to_gguf(self) -> _Renaming:
        """HF name -> GGUF name (None when the architecture has no place for it)."""
        return _Renaming(_GLOBAL_NAMES, _HF_LAYER, self.layer_names, "blk.{}.")

    @cached_property
    def to_hf(self) -> _Renaming:
        """GGUF name -> HF name (None when there is none; see `fused_parts` too)."""
        return _Renaming(_inverse(_GLOBAL_NAMES), _GGUF_LAYER, _inverse(self.layer_names), "model.layers.{}.")

    def fused_parts(self, gguf_name: str) -> list[str] | None:
        """The HF names a fused GGUF tensor holds, in row order; None if it is not fused."""
        match = _GGUF_LAYER.match(gguf_name)
        if not match or match.group(2) not in self.fused:
            return None
        return [f"model.layers.{match.group(1)}.{part}" for part in self.fused[match.group(2)]]


LLAMA = GGUFLayout("llama", _LLAMA_LAYER_NAMES, permutes_rotary_rows=True)
QWEN2 = GGUFLayout("qwen2", _LLAMA_LAYER_NAMES, permutes_rotary_rows=False)
GEMMA3 = GGUFLayout("gemma3", _GEMMA3_LAYER_NAMES, permutes_rotary_rows=False, norm_offset=1.0)
PHI3 = GGUFLayout(
    "phi3",
    {k: v for k, v in _LLAMA_LAYER_NAMES.items() if not k.startswith(("self_attn.q_", "self_attn.k_", "self_attn.v_",
                                                                        "mlp.gate_", "mlp.up_"))},
    permutes_rotary_rows=False,
    fused={
        "attn_qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        "ffn_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    },
)
LAYOUTS = {layout.architecture: layout for layout in (LLAMA, QWEN2, GEMMA3, PHI3)}


def gguf_tensor_name(hf_name: str, layout: GGUFLayout = LLAMA) -> str | None:
    """llama.cpp's name for an HF parameter name; None for one it has no place for."""
    return layout.to_gguf(hf_name)


def hf_tensor_name(gguf_name: str, layout: GGUFLayout = LLAMA) -> str | None:
    """The HF parameter name of a GGUF tensor; None when there is none."""
    return layout.to_hf(gguf_name)


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


def _is_norm(hf_name: str) -> bool:
    return hf_name.endswith("norm.weight")


def to_gguf_layout(hf_name: str, values: np.ndarray, heads: HeadCounts, layout: GGUFLayout = LLAMA) -> np.ndarray:
    """The HF tensor `hf_name` as the `layout` architecture stores it."""
    if layout.norm_offset and _is_norm(hf_name):
        return values + np.float32(layout.norm_offset)
    count = _reordered_heads(hf_name, heads) if layout.permutes_rotary_rows else None
    return values if count is None else permute_qk(values, count)


def from_gguf_layout(hf_name: str, values: np.ndarray, heads: HeadCounts, layout: GGUFLayout = LLAMA) -> np.ndarray:
    """A GGUF file's tensor, whose HF name is `hf_name`, back in HF's form."""
    if layout.norm_offset and _is_norm(hf_name):
        return values - np.float32(layout.norm_offset)
    count = _reordered_heads(hf_name, heads) if layout.permutes_rotary_rows else None
    return values if count is None else unpermute_qk(values, count)

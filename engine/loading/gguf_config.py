"""The engine `ModelConfig` of a GGUF file, from its `<architecture>.*` metadata keys.

Covered architectures (`general.architecture`), each with its llama.cpp tensor layout in
engine/loading/gguf_names.py:

- llama: Llama 2/3, Mistral (llama.cpp writes Mistral models as "llama"), TinyLlama,
  SmolLM; Llama 3.1 rope scaling arrives as a `rope_freqs` tensor;
- qwen2: Qwen2 / Qwen2.5, with biases on q/k/v;
- phi3: Phi-3 and Phi-4 with full rotary embeddings and no long-context rope factors
  (Phi-4-mini's partial rotary and the 128k models' LongRoPE factors are refused); it is
  the same decoder as Llama once its fused projections are split, so it becomes a
  "llama" model;
- gemma3: Gemma 3 text models (engine/models/gemma3.py). llama.cpp fixes what the file
  does not say: every sixth layer global, the local layers' rope base 10000, and the score
  scale 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 62-layer 27B); where a file does
  carry the keys, they win.

Anything else is refused naming the architecture. Nothing here reads tensors' values
except the `rope_freqs` the caller passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ModelConfig, rope_inverse_frequencies
from engine.errors import ModelLoadError
from engine.loading.gguf_names import LAYOUTS, GGUFLayout
from engine.models.gemma3 import (
    DEFAULT_LOCAL_ROPE_BASE,
    DEFAULT_SLIDING_WINDOW_PATTERN,
    FULL,
    GEMMA3_MODEL_TYPE,
    SLIDING,
    check_gemma3_config,
    sliding_window_layers,
)

# GGUF architecture -> the engine model type it becomes.
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "phi3": "llama", "gemma3": GEMMA3_MODEL_TYPE}
SUPPORTED_ARCHITECTURES = tuple(sorted(MODEL_TYPES))
GEMMA3_27B_LAYERS = 62  # llama.cpp scales this size's scores by 1/sqrt(hidden/heads)


def gguf_layout(fields: dict[str, Any], path: Path) -> GGUFLayout:
    """The tensor layout of the file's architecture; ModelLoadError for one not covered."""
    arch = fields.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise ModelLoadError(
            f"{path}: unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return LAYOUTS[arch]


class _Keys:
    """The file's `<arch>.<name>` values, with one-line errors for missing or odd ones."""

    def __init__(self, fields: dict[str, Any], arch: str, path: Path) -> None:
        self.fields, self.arch, self.path = fields, arch, path

    def __call__(self, name: str, default: Any = ModelLoadError) -> Any:
        value = self.fields.get(f"{self.arch}.{name}", default)
        if value is ModelLoadError:
            raise ModelLoadError(f"{self.path}: missing GGUF key {self.arch}.{name}")
        if isinstance(value, list):
            raise ModelLoadError(f"{self.path}: per-layer {self.arch}.{name} is not supported")
        return value

    def has(self, name: str) -> bool:
        return f"{self.arch}.{name}" in self.fields


def config_from_gguf(fields: dict[str, Any], tensor_names: set[str], path: Path,
                     rope_freqs: np.ndarray | None) -> ModelConfig:
    """The model's config from the file's metadata (`fields`: key -> plain value) and the
    names of the tensors it holds (which say whether the head is tied and biases exist)."""
    layout = gguf_layout(fields, path)
    arch = layout.architecture
    key = _Keys(fields, arch, path)
    hidden = int(key("embedding_length"))
    heads = int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", hidden // heads))
    rotary_dim = int(key("rope.dimension_count", head_dim))
    if rotary_dim != head_dim:
        raise ModelLoadError(f"{path}: partial rotary embeddings ({rotary_dim} of {head_dim}) are not supported")
    if any(name.startswith("rope_factors_") for name in tensor_names):
        raise ModelLoadError(f"{path}: long-context rope factors (LongRoPE) are not supported")
    tokens = fields.get("tokenizer.ggml.tokens") or []
    has_tensor = tensor_names.__contains__
    window = key("attention.sliding_window", None)
    config = ModelConfig(
        model_type=MODEL_TYPES[arch],
        vocab_size=int(key("vocab_size", len(tokens))),
        hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length")),
        num_hidden_layers=int(key("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(key("attention.head_count_kv", heads)),
        head_dim=head_dim,
        max_position_embeddings=int(key("context_length", 2048)),
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        tie_word_embeddings=not has_tensor("output.weight"),
        qkv_bias=has_tensor("blk.0.attn_q.bias") or has_tensor("blk.0.attn_qkv.bias"),
        o_bias=has_tensor("blk.0.attn_output.bias"),
        bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=fields.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=fields.get("tokenizer.ggml.padding_token_id"),
        sliding_window=int(window) if window else None,
    )
    if config.qkv_bias and config.model_type == "llama" and not config.o_bias:
        # HF's Llama has biases on all four projections or none; q/k/v alone is Qwen2's shape.
        config.model_type = "qwen2"
    if has_tensor("blk.0.attn_qkv.bias"):
        raise ModelLoadError(f"{path}: biases on a fused q/k/v projection are not supported")
    if arch == "gemma3":
        _gemma3_fields(config, key, path)
    config.rope_scaling = _rope_scaling(key, config, rope_freqs, path)
    return config


def _gemma3_fields(config: ModelConfig, key: _Keys, path: Path) -> None:
    for name in ("final_logit_softcapping", "attn_logit_softcapping"):
        if key(name, None):
            raise ModelLoadError(f"{path}: gemma3.{name} is not supported")
    pattern = key.fields.get(f"{key.arch}.attention.sliding_window_pattern", DEFAULT_SLIDING_WINDOW_PATTERN)
    if isinstance(pattern, list):  # per layer: True where the layer is local
        config.layer_types = [SLIDING if local else FULL for local in pattern]
    else:
        config.layer_types = sliding_window_layers(config.num_hidden_layers, int(pattern))
    config.sliding_window = config.sliding_window or 512
    config.rope_local_base_freq = float(key("rope.freq_base_swa", DEFAULT_LOCAL_ROPE_BASE))
    scale = key("attention.scale", None)
    if scale:
        config.query_pre_attn_scalar = 1.0 / float(scale) ** 2
    elif config.num_hidden_layers == GEMMA3_27B_LAYERS:
        config.query_pre_attn_scalar = float(config.hidden_size // config.num_attention_heads)
    else:
        config.query_pre_attn_scalar = float(config.head_dim)
    check_gemma3_config(config, str(path))


def _rope_scaling(key: _Keys, config: ModelConfig, rope_freqs: np.ndarray | None,
                  path: Path) -> dict[str, Any] | None:
    kind = key("rope.scaling.type", "none")
    factor = float(key("rope.scaling.factor", 1.0))
    if rope_freqs is not None:
        return _llama3_scaling(rope_freqs, key, config, path)
    if kind == "none" or factor == 1.0:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    raise ModelLoadError(f"{path}: unsupported rope scaling type {kind!r}")


def _llama3_scaling(rope_freqs: np.ndarray, key: _Keys, config: ModelConfig, path: Path) -> dict[str, Any]:
    """Llama 3.1-style scaling, stored by llama.cpp as per-frequency divisors (rope_freqs).

    The divisors are matched against the llama3 formula with the factor they imply; the
    usual low/high frequency factors are tried, and anything else is refused.
    """
    factors = np.asarray(rope_freqs, dtype=np.float64).reshape(-1)
    factor = float(factors.max())
    original = int(key("rope.scaling.original_context_length", 8192))
    plain = ModelConfig(**{**config.__dict__, "rope_scaling": None})
    base = np.array(rope_inverse_frequencies(plain))
    for low, high in ((1.0, 4.0), (1.0, 2.0), (2.0, 4.0)):
        candidate = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                     "original_max_position_embeddings": original}
        plain.rope_scaling = candidate
        scaled = np.array(rope_inverse_frequencies(plain))
        if len(scaled) == len(factors) and np.allclose(base / scaled, factors, rtol=1e-3):
            return candidate
    raise ModelLoadError(f"{path}: rope_freqs do not match llama3 rope scaling; not supported")

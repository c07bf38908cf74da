"""Model configuration, built from a checkpoint's own metadata.

`ModelConfig` describes one Llama-family network (Llama 2/3, Mistral, TinyLlama, SmolLM,
Qwen2; Gemma 3 and PaLM add a few fields and read their own config.json) and is made from an HF `config.json` dict (`from_hf_dict`) or by the GGUF loader
from GGUF keys. Nothing here is ever guessed from a file name. `to_hf_dict` writes the
config back in HF's shape so a model directory we save is an ordinary HF directory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import ModelLoadError

# model_type values this runtime implements with engine/models/llama.py.
LLAMA_FAMILY = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class ModelConfig:
    """Hyper-parameters of a decoder-only transformer. Field names follow HF's."""

    model_type: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int = 0  # 0 means hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 has biases on q/k/v only
    o_bias: bool = False  # Llama's `attention_bias` puts biases on o_proj too
    mlp_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    sliding_window: int | None = None  # Llama family: recorded, not applied (contexts here are short)
    # Gemma 3 only (engine/models/gemma3.py reads and writes them):
    layer_types: list[str] | None = None  # per layer "sliding_attention" or "full_attention"
    rope_local_base_freq: float | None = None  # rope base of the sliding-window layers
    query_pre_attn_scalar: float | None = None  # attention scores scale by its -1/2 power
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific keys (e.g. PaLM's)

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ModelLoadError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )

    @property
    def eos_token_ids(self) -> list[int]:
        """The end-of-sequence ids as a list (HF allows an int or a list)."""
        if self.eos_token_id is None:
            return []
        if isinstance(self.eos_token_id, int):
            return [self.eos_token_id]
        return list(self.eos_token_id)

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """Build from an HF `config.json` dict; `source` names the file in errors."""
        model_type = raw.get("model_type")
        if model_type not in LLAMA_FAMILY:
            raise ModelLoadError(
                f"{source}: unsupported architecture model_type={model_type!r} "
                f"(supported: {', '.join(LLAMA_FAMILY)})"
            )
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ModelLoadError(f"{source}: unsupported hidden_act={act!r} (only 'silu')")
        # transformers >= 5 nests rope settings under `rope_parameters`; older files use
        # top-level `rope_theta` and `rope_scaling`.
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        rope_theta = float(raw.get("rope_theta", rope.pop("rope_theta", 10000.0)))
        rope.pop("rope_theta", None)
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ModelLoadError(f"{source}: unsupported rope_scaling type {rope_type!r}")
        rope_scaling = None if rope_type == "default" else {**rope, "rope_type": rope_type}
        attention_bias = bool(raw.get("attention_bias", False))
        try:
            return cls(
                model_type=model_type,
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                num_key_value_heads=int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
                head_dim=int(raw.get("head_dim") or 0),
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                qkv_bias=True if model_type == "qwen2" else attention_bias,
                o_bias=False if model_type == "qwen2" else attention_bias,
                mlp_bias=bool(raw.get("mlp_bias", False)),
                bos_token_id=raw.get("bos_token_id"),
                eos_token_id=raw.get("eos_token_id"),
                pad_token_id=raw.get("pad_token_id"),
                sliding_window=raw.get("sliding_window"),
            )
        except KeyError as exc:
            raise ModelLoadError(f"{source}: missing required key {exc.args[0]!r}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """An HF-style `config.json` dict that `from_hf_dict` reads back unchanged."""
        gemma_only = ("layer_types", "rope_local_base_freq", "query_pre_attn_scalar")
        out = {k: v for k, v in asdict(self).items() if k not in ("qkv_bias", "o_bias", "extra", *gemma_only)}
        out["attention_bias"] = self.o_bias
        out["hidden_act"] = "silu"
        out["architectures"] = [
            {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(
                self.model_type, self.model_type
            )
        ]
        if self.rope_scaling is None:
            out.pop("rope_scaling")
        out.update(self.extra)
        return out

    @property
    def num_parameters(self) -> int:
        """Parameter count implied by the shapes (tied embeddings counted once)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
        if self.qkv_bias:
            per_layer += q + 2 * kv
        embed = v * d * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * per_layer + embed + d


def rope_inverse_frequencies(config: ModelConfig) -> list[float]:
    """Per-pair rotary frequencies, with linear or llama3 scaling applied.

    Returns head_dim/2 floats; the model turns them into a tensor. Kept free of torch so
    that the formula is easy to test against hand-computed values.
    """
    dim = config.head_dim
    base = config.rope_theta
    inv = [1.0 / (base ** (2 * i / dim)) for i in range(dim // 2)]
    scaling = config.rope_scaling
    if not scaling:
        return inv
    rope_type = scaling.get("rope_type", "default")
    factor = float(scaling.get("factor", 1.0))
    if rope_type == "linear":
        return [f / factor for f in inv]
    if rope_type == "llama3":
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        original = float(scaling.get("original_max_position_embeddings", 8192))
        low_wavelen = original / low
        high_wavelen = original / high
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                out.append(f)
            elif wavelen > low_wavelen:
                out.append(f / factor)
            else:
                smooth = (original / wavelen - low) / (high - low)
                out.append((1 - smooth) * f / factor + smooth * f)
        return out
    return inv

"""The Gemma 3 decoder (text only), as transformers' `Gemma3ForCausalLM` computes it.

Where it differs from the Llama file's decoder:

- the embeddings are multiplied by sqrt(hidden_size) (rounded to the weights' dtype);
- every RMSNorm scales by (1 + weight), and each block normalises its sub-blocks' inputs
  *and* outputs: x + post_attn(attn(input_norm(x))), then x + post_ffn(mlp(pre_ffn(x)));
- queries and keys get their own RMSNorm over each head before the rotary embedding;
- attention scores are scaled by query_pre_attn_scalar^-1/2, not head_dim^-1/2;
- the feed-forward network is GeGLU: down(gelu_tanh(gate(x)) * up(x));
- most layers are local: they attend to the last `sliding_window` tokens only and use
  their own rotary base (`rope_local_base_freq`); the others (`layer_types`) are global,
  with `rope_theta` and any rope scaling;
- the LM head is the embedding matrix (tied), as in every Gemma 3 checkpoint.

Parameter names are HF's, so a Gemma 3 `model.safetensors` loads as it is. The rotary
module returns the angles of both kinds of layer stacked (global first), and each layer
picks its own, so callers pass `cos, sin` along exactly as for the Llama decoder; the
same holds for the KV cache (`cache.attend(..., window=...)` limits a local layer's
span). `gemma3_config_from_dict` / `gemma3_config_to_dict` read and write the
`config.json` of model type `gemma3_text`. Loading lives in engine/loading/.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import SUPPORTED_ROPE_TYPES, ModelConfig, rope_inverse_frequencies
from engine.errors import ModelLoadError
from engine.models.llama import (
    MLP,
    Attention,
    AttentionCache,
    Backbone,
    CausalLM,
    apply_rotary,
    causal_attention,
    rms_normalize,
)

GEMMA3_MODEL_TYPE = "gemma3_text"
GEMMA3_ARCHITECTURE = "Gemma3ForCausalLM"
SLIDING, FULL = "sliding_attention", "full_attention"
ACTIVATION = "gelu_pytorch_tanh"
DEFAULT_SLIDING_WINDOW_PATTERN = 6  # every sixth layer is global, as in every Gemma 3 size
DEFAULT_LOCAL_ROPE_BASE = 10000.0


def sliding_window_layers(num_layers: int, pattern: int = DEFAULT_SLIDING_WINDOW_PATTERN) -> list[str]:
    """Gemma 3's layer kinds: every `pattern`-th layer global, the others local."""
    return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]


def _rope_settings(raw: dict[str, Any], source: str) -> tuple[float, float, dict[str, Any] | None]:
    """(rope_theta, rope_local_base_freq, rope_scaling of the global layers) from either
    transformers 5's per-layer-kind `rope_parameters` or the older top-level keys."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and FULL in params:
        full, local = dict(params.get(FULL) or {}), dict(params.get(SLIDING) or {})
        theta = float(full.pop("rope_theta", raw.get("rope_theta", 1e6)))
        local_theta = float(local.get("rope_theta", raw.get("rope_local_base_freq", DEFAULT_LOCAL_ROPE_BASE)))
        if local.get("rope_type", "default") != "default":
            raise ModelLoadError(f"{source}: rope scaling on sliding-window layers is not supported")
        scaling = full
    else:
        theta = float(raw.get("rope_theta", 1e6))
        local_theta = float(raw.get("rope_local_base_freq", DEFAULT_LOCAL_ROPE_BASE))
        scaling = dict(raw.get("rope_scaling") or {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(f"{source}: unsupported rope_scaling type {rope_type!r}")
    return theta, local_theta, (None if rope_type == "default" else {**scaling, "rope_type": rope_type})


def gemma3_config_from_dict(raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """A Gemma 3 `ModelConfig` from a `config.json` dict of model type `gemma3_text`."""
    if raw.get("model_type") != GEMMA3_MODEL_TYPE:
        raise ModelLoadError(f"{source}: model_type={raw.get('model_type')!r} is not {GEMMA3_MODEL_TYPE!r}")
    activation = raw.get("hidden_activation") or ACTIVATION
    if activation != ACTIVATION:
        raise ModelLoadError(f"{source}: unsupported hidden_activation={activation!r} (only {ACTIVATION!r})")
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if raw.get(key) is not None:
            raise ModelLoadError(f"{source}: {key}={raw[key]!r} is not supported")
    if raw.get("use_bidirectional_attention"):
        raise ModelLoadError(f"{source}: bidirectional attention (an encoder) is not supported")
    theta, local_theta, scaling = _rope_settings(raw, source)
    try:
        layers = int(raw["num_hidden_layers"])
        pattern = int(raw.get("sliding_window_pattern") or raw.get("_sliding_window_pattern") or DEFAULT_SLIDING_WINDOW_PATTERN)
        layer_types = list(raw.get("layer_types") or sliding_window_layers(layers, pattern))
        head_dim = int(raw.get("head_dim") or 256)
        bias = bool(raw.get("attention_bias", False))
        config = ModelConfig(
            model_type=GEMMA3_MODEL_TYPE,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_hidden_layers=layers,
            num_attention_heads=int(raw["num_attention_heads"]),
            num_key_value_heads=int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
            head_dim=head_dim,
            max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
            qkv_bias=bias,
            o_bias=bias,
            bos_token_id=raw.get("bos_token_id", 2),
            eos_token_id=raw.get("eos_token_id", 1),
            pad_token_id=raw.get("pad_token_id", 0),
            sliding_window=int(raw.get("sliding_window") or 512),
            layer_types=layer_types,
            rope_local_base_freq=local_theta,
            query_pre_attn_scalar=float(raw.get("query_pre_attn_scalar") or head_dim),
        )
    except KeyError as exc:
        raise ModelLoadError(f"{source}: missing required key {exc.args[0]!r}") from None
    check_gemma3_config(config, source)
    return config


def check_gemma3_config(config: ModelConfig, source: str) -> None:
    """ModelLoadError when the Gemma-specific fields do not describe a runnable model."""
    kinds = config.layer_types or []
    if len(kinds) != config.num_hidden_layers or set(kinds) - {SLIDING, FULL}:
        raise ModelLoadError(
            f"{source}: layer_types must name {config.num_hidden_layers} layers as {SLIDING!r} or {FULL!r}"
        )
    if not config.tie_word_embeddings:
        raise ModelLoadError(f"{source}: Gemma 3 ties its LM head to the embeddings; this config does not")


def gemma3_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The `config.json` dict transformers' Gemma3ForCausalLM reads (and so does
    `gemma3_config_from_dict`); rope settings in the top-level form both read."""
    out: dict[str, Any] = {
        "architectures": [GEMMA3_ARCHITECTURE],
        "model_type": GEMMA3_MODEL_TYPE,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_local_base_freq": config.rope_local_base_freq,
        "sliding_window": config.sliding_window,
        "layer_types": list(config.layer_types or []),
        "query_pre_attn_scalar": _whole(config.query_pre_attn_scalar),
        "hidden_activation": ACTIVATION,
        "attention_bias": config.qkv_bias,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "tie_word_embeddings": True,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    if config.rope_scaling:
        out["rope_scaling"] = dict(config.rope_scaling)
    return out


def _whole(value: float | None) -> float | int | None:
    """An integral float as an int: transformers' Gemma 3 config insists on an int here."""
    return int(value) if value is not None and float(value).is_integer() else value


class GemmaRMSNorm(nn.Module):
    """RMSNorm scaling by (1 + weight), computed in fp32 and cast back afterwards."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (rms_normalize(x.float(), self.eps) * (1.0 + self.weight.float())).to(x.dtype)


class ScaledEmbedding(nn.Embedding):
    """Embeddings times sqrt(hidden_size), the factor rounded to the weights' dtype first
    (as Gemma was trained). The LM head reads the unscaled `weight`."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor(math.sqrt(self.embedding_dim), dtype=self.weight.dtype)
        return super().forward(input_ids) * scale


class Gemma3Rotary(nn.Module):
    """cos/sin for the global layers (index 0) and the local ones (index 1), stacked."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        local = replace(config, rope_theta=config.rope_local_base_freq or DEFAULT_LOCAL_ROPE_BASE, rope_scaling=None)
        inv = [rope_inverse_frequencies(config), rope_inverse_frequencies(local)]
        self.register_buffer("inv_freq", torch.tensor(inv, dtype=torch.float32), persistent=False)  # (2, D/2)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[None, ..., None].float() * self.inv_freq[:, None, None]  # (2, B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (2, B, T, D)
        return emb.cos().to(dtype)[:, :, None], emb.sin().to(dtype)[:, :, None]  # (2, B, 1, T, D)


class Gemma3Attention(Attention):
    """Grouped-query attention with q/k norms, Gemma's score scale, and for local layers a
    sliding window and the local rotary angles."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__(config, layer)
        self.q_norm = GemmaRMSNorm(config.head_dim, config.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(config.head_dim, config.rms_norm_eps)
        is_local = (config.layer_types or [])[layer] == SLIDING
        self.window = config.sliding_window if is_local else None
        self.rope_index = 1 if is_local else 0
        # Scores are q.k * query_pre_attn_scalar^-1/2; attention scales by head_dim^-1/2
        # itself (here and in the engine's KV cache), so q carries the ratio.
        scalar = config.query_pre_attn_scalar or config.head_dim
        self.query_scale = math.sqrt(config.head_dim / scalar)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: AttentionCache | None,
        padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.num_heads, self.head_dim)).transpose(1, 2)  # (B, Hq, T, D)
        k = self.k_norm(self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        cos, sin = cos[self.rope_index], sin[self.rope_index]  # (B, 1, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.query_scale != 1.0:
            q = q * self.query_scale
        if cache is None:
            out = causal_attention(q, k, v, padding_mask, window=self.window)
        else:
            out = cache.attend(self.layer, q, k, v, window=self.window)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class Gemma3MLP(MLP):
    """GeGLU feed-forward: down(gelu_tanh(gate(x)) * up(x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Gemma3Layer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(d, eps)
        self.self_attn = Gemma3Attention(config, layer)
        self.post_attention_layernorm = GemmaRMSNorm(d, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(d, eps)
        self.mlp = Gemma3MLP(config)
        self.post_feedforward_layernorm = GemmaRMSNorm(d, eps)

    def forward(self, x, cos, sin, cache, padding_mask) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, cache, padding_mask))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3ForCausalLM(CausalLM):
    """Backbone (scaled embeddings, Gemma 3 layers, final norm) plus the tied LM head."""

    def __init__(self, config: ModelConfig) -> None:
        check_gemma3_config(config, "config")
        backbone = Backbone(config, layer=Gemma3Layer, norm=GemmaRMSNorm)
        backbone.embed_tokens = ScaledEmbedding(config.vocab_size, config.hidden_size)
        backbone.rotary = Gemma3Rotary(config)
        super().__init__(config, backbone)

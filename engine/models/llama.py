"""The Llama-family decoder: Llama 2/3, Mistral, TinyLlama, SmolLM, Qwen2, Phi-3.

RMSNorm, rotary embeddings (with linear or llama3 scaling), SwiGLU, grouped-query
attention, tied or untied embeddings, optional q/k/v (Qwen2) or all-projection biases.
Parameter names are HF's (`model.layers.0.self_attn.q_proj.weight`, ...), so an HF
state dict loads as it is.

The model does not own a KV cache. Attention either runs causally over the given tokens
(training, scoring: `cache=None`, optional padding mask) or hands q/k/v to an
`AttentionCache` that the engine's runner provides (it stores k/v and attends over the
sequence's history). Weight loading lives in engine/loading/, generation in engine/engine.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig, rope_inverse_frequencies


class AttentionCache(Protocol):
    """What the model needs from a KV cache: store this step's k/v, attend over history."""

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
    ) -> torch.Tensor:
        """q: (B, Hq, T, D); k, v: (B, Hkv, T, D), rotary already applied. Returns (B, Hq, T, D).
        window: attend only to the last `window` positions, the token's own included
        (sliding-window layers, e.g. Gemma 3's local ones); None for the whole history."""
        ...


def rms_normalize(x32: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last dimension (x in fp32)."""
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * rms_normalize(x.float(), self.eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin for given positions, computed on the fly (no table, any length)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        inv = torch.tensor(rope_inverse_frequencies(config), dtype=torch.float32)
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]  # (B, 1, T, D)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


def causal_mask(length: int, window: int | None, device: torch.device) -> torch.Tensor:
    """(T, T) True where query i may attend to key j: j <= i, and i - j < window if given."""
    i = torch.arange(length, device=device)
    distance = i[:, None] - i[None, :]  # (T, T)
    allowed = distance >= 0
    return allowed if window is None else allowed & (distance < window)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding_mask: torch.Tensor | None, window: int | None = None
) -> torch.Tensor:
    """Attention of each token over itself and earlier tokens of the same row (only the
    last `window` positions of them when a window is given).

    q: (B, Hq, T, D); k, v: (B, Hkv, T, D); padding_mask: (B, T), 1 for real tokens.
    Padded query rows attend to themselves only, so they stay finite.
    """
    T = q.shape[2]
    if window is not None and window >= T:
        window = None  # the window covers every row: plain causal attention
    if padding_mask is None and window is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    if padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, window, q.device), enable_gqa=True)
    allowed = causal_mask(T, window, q.device)[None] & padding_mask.bool()[:, None, :]  # (B, T, T)
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=q.device)[None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], enable_gqa=True)


class Attention(nn.Module):
    """Grouped-query attention: `num_key_value_heads` key/value heads shared by the query
    heads (one of them is multi-query attention, as PaLM has), rotary on q and k."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        d, hd = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=config.qkv_bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=config.o_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: AttentionCache | None,
        padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, Hq, T, D)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is None:
            out = causal_attention(q, k, v, padding_mask)
        else:
            out = cache.attend(self.layer, q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=config.mlp_bias)
        self.up_proj = nn.Linear(d, f, bias=config.mlp_bias)
        self.down_proj = nn.Linear(f, d, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache, padding_mask) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, padding_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """Embeddings, the layers, the final norm and the rotary angles, under HF's names;
    `layer(config, index)` and `norm(dim, eps)` make the architecture's blocks and norms."""

    def __init__(
        self,
        config: ModelConfig,
        layer: Callable[[ModelConfig, int], nn.Module] = DecoderLayer,
        norm: Callable[[int, float], nn.Module] = RMSNorm,
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(layer(config, i) for i in range(config.num_hidden_layers))
        self.norm = norm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config)


class CausalLM(nn.Module):
    """What every decoder here shares: embed, rotary angles, the layers, final norm, LM head.

    A subclass hands over its `Backbone` as `self.model`; each layer is called as
    `layer(x, cos, sin, cache, padding_mask)`. The LM head is the embedding matrix when the
    config ties them. `hidden_states` is what reward and value heads read.
    """

    def __init__(self, config: ModelConfig, backbone: Backbone) -> None:
        super().__init__()
        self.config = config
        self.model = backbone
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, d).

        input_ids: (B, T). positions: (B, T); by default 0..T-1, or counted over the real
        tokens of `attention_mask` (1 = real, 0 = padding, left or right).
        """
        if positions is None:
            if attention_mask is None:
                positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
            else:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        x = self.model.embed_tokens(input_ids)  # (B, T, d)
        cos, sin = self.model.rotary(positions, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache, attention_mask)
        return self.model.norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab)."""
        return self.lm_head(self.hidden_states(input_ids, positions, cache, attention_mask))


class LlamaForCausalLM(CausalLM):
    """The Llama-family decoder: backbone plus LM head (tied or not)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, Backbone(config))

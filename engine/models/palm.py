"""The PaLM decoder (Chowdhery et al. 2022), small enough to pretrain on a laptop.

Each block reads one pre-norm of the residual stream and runs attention and the
feed-forward network *in parallel* from it; both outputs are added to the residual:

    h = LayerNorm(x)                      # weight only, no bias
    x = x + Attention(h) + SwiGLU(h)

Attention is multi-query (many query heads, one shared key/value head) with rotary
embeddings; SwiGLU is `down(silu(gate(h)) * up(h))`; no linear layer or norm has a bias;
the output projection is the input embedding matrix (tied). Attention (grouped-query with
a single key/value head), SwiGLU and the embeddings-layers-norm backbone are the Llama
file's modules; the parallel block, its LayerNorm and the config are PaLM's own.

Parameter names (chosen to mirror the Llama file, so LoRA targets, reward/value heads and
the store treat both alike):

    model.embed_tokens.weight                   (vocab, d)  also the LM head
    model.layers.N.norm.weight                  (d,)        the block's single pre-norm
    model.layers.N.self_attn.q_proj.weight      (heads * head_dim, d)
    model.layers.N.self_attn.k_proj.weight      (head_dim, d)   one KV head
    model.layers.N.self_attn.v_proj.weight      (head_dim, d)
    model.layers.N.self_attn.o_proj.weight      (d, heads * head_dim)
    model.layers.N.mlp.{gate,up}_proj.weight    (ffn, d)
    model.layers.N.mlp.down_proj.weight         (d, ffn)
    model.norm.weight                           (d,)        final norm

The config is the shared `engine.config.ModelConfig` with `model_type="palm"`,
`num_key_value_heads=1` and `tie_word_embeddings=True`; `rms_norm_eps` holds the
LayerNorm epsilon. `palm_config_from_dict` / `palm_config_to_dict` read and write the
`config.json` of a PaLM model directory. Like the Llama model, this one owns no KV cache:
with `cache` given, attention hands q/k/v to `cache.attend(layer, q, k, v)`.
Training lives in trainer/pretrain.py, loading in engine/loading/.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig
from engine.errors import ModelLoadError
from engine.models.llama import MLP, Attention, Backbone, CausalLM

PALM_ARCHITECTURE = "PalmForCausalLM"


def palm_config(
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    rope_theta: float = 10000.0,
    layer_norm_eps: float = 1e-5,
    bos_token_id: int | None = 1,
    eos_token_id: int | list[int] | None = 2,
    pad_token_id: int | None = None,
) -> ModelConfig:
    """A PaLM `ModelConfig`; the feed-forward width defaults to 4 * hidden_size."""
    return ModelConfig(
        model_type="palm",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=1,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=layer_norm_eps,
        rope_theta=rope_theta,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def palm_config_from_dict(raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Build a PaLM config from a model directory's `config.json` dict."""
    if raw.get("model_type") != "palm":
        raise ModelLoadError(f"{source}: model_type={raw.get('model_type')!r} is not 'palm'")
    kv_heads = int(raw.get("num_key_value_heads", 1))
    if kv_heads != 1:
        raise ModelLoadError(f"{source}: PaLM uses one key/value head, got num_key_value_heads={kv_heads}")
    try:
        config = palm_config(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rope_theta=float(raw.get("rope_theta", 10000.0)),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-5)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=raw.get("eos_token_id"),
            pad_token_id=raw.get("pad_token_id"),
        )
    except KeyError as exc:
        raise ModelLoadError(f"{source}: missing required key {exc.args[0]!r}") from None
    if raw.get("head_dim") and int(raw["head_dim"]) != config.head_dim:
        raise ModelLoadError(f"{source}: head_dim={raw['head_dim']} must equal hidden_size / num_attention_heads")
    return config


def palm_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The `config.json` dict of a PaLM model directory; `palm_config_from_dict` reads it back."""
    return {
        "architectures": [PALM_ARCHITECTURE],
        "model_type": "palm",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": 1,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "layer_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "hidden_act": "silu",
        "parallel_block": True,
        "tie_word_embeddings": True,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }


class LayerNorm(nn.Module):
    """LayerNorm with a learned scale and no bias (PaLM uses no biases anywhere)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 so bf16 activations keep their statistics.
        return F.layer_norm(x.float(), x.shape[-1:], None, None, self.eps).to(x.dtype) * self.weight


class PalmBlock(nn.Module):
    """x + Attention(norm(x)) + SwiGLU(norm(x)), one norm shared by both branches."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.norm = LayerNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)  # one key/value head: multi-query
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache, padding_mask) -> torch.Tensor:
        h = self.norm(x)
        return x + self.self_attn(h, cos, sin, cache, padding_mask) + self.mlp(h)


class PalmForCausalLM(CausalLM):
    """Backbone plus the tied LM head; the same calling convention as LlamaForCausalLM."""

    def __init__(self, config: ModelConfig) -> None:
        if config.num_key_value_heads != 1:
            raise ModelLoadError(f"PaLM uses one key/value head, got {config.num_key_value_heads}")
        if not config.tie_word_embeddings or config.qkv_bias or config.o_bias or config.mlp_bias:
            raise ModelLoadError("PaLM ties its input and output embeddings and has no biases; the config differs")
        super().__init__(config, Backbone(config, layer=PalmBlock, norm=LayerNorm))

    def init_weights(self, std: float = 0.02) -> None:
        """Fresh weights for pretraining: normal(0, std), output projections scaled down
        by sqrt(2 * layers) so the residual stream does not grow with depth; norms at 1."""
        depth_scale = (2 * self.config.num_hidden_layers) ** -0.5
        for name, param in self.named_parameters():
            if param.dim() == 1:
                nn.init.ones_(param)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, std=std * depth_scale)
            else:
                nn.init.normal_(param, std=std)

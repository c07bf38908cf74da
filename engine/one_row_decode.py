"""Batch-1 decode of a Llama-family model on the CPU, as a few compiled pieces per layer.

Decoding one token for one sequence reads every weight once and does almost no
arithmetic, so its speed is memory bandwidth plus per-operation overhead. Run through the
model's own modules, a step is about 40 small PyTorch calls per layer (norms, rotary,
seven products, activation, residuals), and on this project's CPU their overhead cost
more than the products themselves. Here each layer is two calls of code that torch
inductor compiled once, with every product written as multiply-and-sum (one vectorized
pass over the weight; see engine/cpu_linear.py for why not `F.linear`):

- `_before_attention`: input RMSNorm, the q/k/v products, rotary on q and k;
- `_after_attention`: output product and residual, post-attention RMSNorm, the SwiGLU
  products and activation, residual;

and the model ends with one `_final_norm_and_head` call. Attention over the paged
cache stays the runner's own (`cache.attend`). Shapes are compiled as static, for the
model's own sizes, which measured faster than dynamic ones; every layer of a model shares
one compilation, and a model of another size compiles its own once. Weights are passed in as they are
at each call, never copied: a model trained between engine steps is used as it is now.

What qualifies (`supports`): a `LlamaForCausalLM` in fp32 on the CPU whose projections
are plain `nn.Linear` and norms plain `RMSNorm`; anything else (LoRA adapters, int8
layers, PaLM blocks, other devices or dtypes) takes the model's own forward, as does every
batch of more than one row. When torch.compile cannot build the pieces (no C++
compiler), `OneRowDecoder.available(model)` is False and callers fall back the same way.

Not here: attention, the KV cache, sampling, batched decode.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from engine.built_once import BuiltOnce, first_line
from engine.cpu_linear import row_product
from engine.models.llama import AttentionCache, LlamaForCausalLM, RMSNorm, apply_rotary, rms_norm

log = logging.getLogger(__name__)


def _product(weight: torch.Tensor, row: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = row_product(weight, row)  # (out,)
    return y if bias is None else y + bias


def _before_attention(
    x: torch.Tensor, norm: torch.Tensor, eps: float, head_dim: int,
    wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor,
    bq: torch.Tensor | None, bk: torch.Tensor | None, bv: torch.Tensor | None,
    cos: torch.Tensor, sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (d,) residual stream. Returns q (Hq, D), k (Hkv, D) with rotary applied, v (Hkv, D)."""
    h = rms_norm(x, norm, eps)
    q = _product(wq, h, bq).view(-1, head_dim)
    k = _product(wk, h, bk).view(-1, head_dim)
    v = _product(wv, h, bv).view(-1, head_dim)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v


def _after_attention(
    x: torch.Tensor, attended: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor | None,
    norm: torch.Tensor, eps: float,
    wg: torch.Tensor, wu: torch.Tensor, wd: torch.Tensor,
    bg: torch.Tensor | None, bu: torch.Tensor | None, bd: torch.Tensor | None,
) -> torch.Tensor:
    """x: (d,) residual stream, attended: (Hq * D,). Returns the layer's output (d,)."""
    x = x + _product(wo, attended, bo)
    h = rms_norm(x, norm, eps)
    return x + _product(wd, F.silu(_product(wg, h, bg)) * _product(wu, h, bu), bd)


def _final_norm_and_head(x: torch.Tensor, norm: torch.Tensor, eps: float, head: torch.Tensor) -> torch.Tensor:
    return _product(head, rms_norm(x, norm, eps), None)  # (V,)


def _bias(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach()


def _attention_weights(layer: nn.Module) -> tuple:
    """`_before_attention`'s arguments from `norm` to `bv`, read from the layer as it is now."""
    attn, norm = layer.self_attn, layer.input_layernorm
    return (
        norm.weight.detach(), norm.eps, attn.head_dim,
        attn.q_proj.weight.detach(), attn.k_proj.weight.detach(), attn.v_proj.weight.detach(),
        _bias(attn.q_proj), _bias(attn.k_proj), _bias(attn.v_proj),
    )


def _mlp_weights(layer: nn.Module) -> tuple:
    """`_after_attention`'s arguments from `wo` on, read from the layer as it is now."""
    attn, mlp, norm = layer.self_attn, layer.mlp, layer.post_attention_layernorm
    return (
        attn.o_proj.weight.detach(), _bias(attn.o_proj), norm.weight.detach(), norm.eps,
        mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach(), mlp.down_proj.weight.detach(),
        _bias(mlp.gate_proj), _bias(mlp.up_proj), _bias(mlp.down_proj),
    )


def supports(model: nn.Module) -> bool:
    """Whether `model` can decode through this module (see the module docstring)."""
    if type(model) is not LlamaForCausalLM or type(model.lm_head) is not nn.Linear:
        return False
    weight = model.lm_head.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(m) is not nn.Linear for m in linears):
            return False
        if type(layer.input_layernorm) is not RMSNorm or type(layer.post_attention_layernorm) is not RMSNorm:
            return False
    return type(model.model.norm) is RMSNorm


@torch.inference_mode()
def _first_call(model: LlamaForCausalLM, before, after, head) -> None:
    """Run each piece once on the model's own first layer and head (zero activations,
    no cache), which compiles them for this model's sizes. Real weights matter:
    dynamo compiles again for any later call whose inputs this one does not match
    (a weight made in inference mode, two arguments that are one tensor, other sizes)."""
    backbone = model.model
    layer = backbone.layers[0]
    x = torch.zeros(model.config.hidden_size)
    cos, sin = backbone.rotary(torch.zeros(1, 1, dtype=torch.long), x.dtype)
    q, _, _ = before(x, *_attention_weights(layer), cos.view(-1), sin.view(-1))
    after(x, torch.zeros(q.numel()), *_mlp_weights(layer))
    head(x, backbone.norm.weight.detach(), backbone.norm.eps, model.lm_head.weight.detach())


def _compile_pieces(model: LlamaForCausalLM) -> tuple | None:
    """The three pieces compiled for `model`'s sizes, or None where torch.compile cannot build them."""
    pieces = tuple(torch.compile(f, dynamic=False) for f in (_before_attention, _after_attention, _final_norm_and_head))
    try:
        _first_call(model, *pieces)
    # A capability probe: inductor reports a missing or broken compiler through several
    # exception types, and every one of them means "use the model's own forward".
    except Exception as error:  # noqa: BLE001
        log.warning("torch.compile is unavailable here (%s); batch-1 decode uses the model's own forward",
                    first_line(error))
        return None
    return pieces


class OneRowDecoder:
    """Compiled batch-1 decode steps for a Llama-family model (see the module docstring).

    Class-level: the compiled pieces are shared by the whole process. Compiling them
    (`available`, called by the runner's `warm_up`) takes about 5 s in a process that finds
    them in inductor's disk cache, and 15-25 s the first time on a machine; after that each
    call still carries about 0.1 ms of dynamo's own checks, 61 calls per step for a 30-layer
    model.
    """

    _pieces: BuiltOnce[tuple] = BuiltOnce(_compile_pieces)

    @classmethod
    def available(cls, model: LlamaForCausalLM) -> bool:
        """Compile the pieces if not tried yet, on `model`'s own weights; False where
        torch.compile cannot build them."""
        return cls._pieces.get(model) is not None

    @classmethod
    @torch.inference_mode()
    def logits(cls, model: LlamaForCausalLM, token: torch.Tensor, position: torch.Tensor, cache: AttentionCache) -> torch.Tensor:
        """One decode step for one sequence: feed `token` (1,) at `position` (1,); returns logits (1, V).

        Call only when `supports(model)` and `available(model)`.
        """
        before, after, head = cls._pieces.result
        backbone = model.model
        x = backbone.embed_tokens(token).view(-1)  # (d,)
        cos, sin = backbone.rotary(position.view(1, 1), x.dtype)  # (1, 1, 1, D)
        cos, sin = cos.view(-1), sin.view(-1)
        for index, layer in enumerate(backbone.layers):
            q, k, v = before(x, *_attention_weights(layer), cos, sin)
            attended = cache.attend(index, q[None, :, None], k[None, :, None], v[None, :, None])  # (1, Hq, 1, D)
            x = after(x, attended.reshape(-1), *_mlp_weights(layer))
        final = backbone.norm
        return head(x, final.weight.detach(), final.eps, model.lm_head.weight.detach())[None]  # (1, V)

"""PaLM model: blocks against a hand-written reference of the same equations, the
padding and cache paths against the plain causal forward, and the config round trip."""

from __future__ import annotations

import math

import pytest
import torch

from engine.errors import ModelLoadError
from engine.models.palm import PalmForCausalLM, palm_config, palm_config_from_dict, palm_config_to_dict
from engine.models.registry import build_model, config_from_dict, config_to_dict
from tiny_models import tiny_palm


def tiny_model(seed: int = 0) -> PalmForCausalLM:
    model = tiny_palm(97, seed)
    model.init_weights(std=0.2)
    # Norm scales away from 1 so a wrong norm would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model.eval()


def reference_logits(model: PalmForCausalLM, ids: list[int]) -> torch.Tensor:
    """The PaLM equations written out one position and one head at a time.

    Shares nothing with the model's code but its weights.
    """
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    d, H, D, eps = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.rms_norm_eps
    T = len(ids)

    def layer_norm(x, w):  # x: (d,)
        mean = sum(x) / d
        var = sum((xi - mean) ** 2 for xi in x) / d
        return torch.stack([(xi - mean) / math.sqrt(var + eps) for xi in x]) * w

    def rotate(vec, pos):  # vec: (D,), pairs (i, i + D/2) turned by pos * theta_i
        out = vec.clone()
        for i in range(D // 2):
            angle = pos * cfg.rope_theta ** (-2 * i / D)
            a, b = vec[i], vec[i + D // 2]
            out[i] = a * math.cos(angle) - b * math.sin(angle)
            out[i + D // 2] = b * math.cos(angle) + a * math.sin(angle)
        return out

    xs = [sd["model.embed_tokens.weight"][t].clone() for t in ids]
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}."
        hs = [layer_norm(x, sd[p + "norm.weight"]) for x in xs]
        q = [sd[p + "self_attn.q_proj.weight"] @ h for h in hs]  # each (H*D,)
        k = [rotate(sd[p + "self_attn.k_proj.weight"] @ h, t) for t, h in enumerate(hs)]  # one KV head
        v = [sd[p + "self_attn.v_proj.weight"] @ h for h in hs]
        new_xs = []
        for t in range(T):
            heads = []
            for head in range(H):
                qh = rotate(q[t][head * D : (head + 1) * D], t)
                scores = torch.tensor([float(qh @ k[s]) / math.sqrt(D) for s in range(t + 1)], dtype=torch.float64)
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                heads.append(sum(weights[s] * v[s] for s in range(t + 1)))
            attn = sd[p + "self_attn.o_proj.weight"] @ torch.cat(heads)
            gate = sd[p + "mlp.gate_proj.weight"] @ hs[t]
            up = sd[p + "mlp.up_proj.weight"] @ hs[t]
            ffn = sd[p + "mlp.down_proj.weight"] @ (gate / (1 + torch.exp(-gate)) * up)
            new_xs.append(xs[t] + attn + ffn)  # parallel: both branches read the same norm
        xs = new_xs
    final = [layer_norm(x, sd["model.norm.weight"]) for x in xs]
    # Tied embeddings: the LM head is the embedding matrix.
    return torch.stack([sd["model.embed_tokens.weight"] @ h for h in final])


def test_logits_match_reference_equations():
    model = tiny_model()
    ids = [5, 17, 3, 88, 42, 1, 60]
    with torch.no_grad():
        got = model(torch.tensor([ids]))[0].double()
    want = reference_logits(model, ids)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_structure_is_palm():
    model = tiny_model()
    names = dict(model.named_parameters())
    assert not any(name.endswith("bias") for name in names)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert names["model.layers.0.self_attn.k_proj.weight"].shape == (model.config.head_dim, 32)
    # one norm per block: no post-attention norm
    assert "model.layers.0.post_attention_layernorm.weight" not in names


def test_left_padding_matches_unpadded_rows():
    model = tiny_model(1)
    a, b = [4, 9, 13, 2, 77], [31, 8]
    padded = torch.tensor([a, [0, 0, 0] + b])
    mask = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]])
    with torch.no_grad():
        batch = model(padded, attention_mask=mask)
        alone_b = model(torch.tensor([b]))
    assert torch.allclose(batch[1, 3:], alone_b[0], atol=1e-5)


class ConcatCache:
    """Minimal KV cache for one batch: appends k/v per layer and attends over history."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def attend(self, layer, q, k, v):
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        T, S = q.shape[2], k.shape[2]
        allowed = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)


def test_cache_path_matches_full_forward():
    model = tiny_model(2)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    cache = ConcatCache()
    with torch.no_grad():
        full = model(ids)
        first = model(ids[:, :4], positions=torch.arange(4)[None], cache=cache)
        step5 = model(ids[:, 4:5], positions=torch.tensor([[4]]), cache=cache)
        step6 = model(ids[:, 5:6], positions=torch.tensor([[5]]), cache=cache)
    incremental = torch.cat([first, step5, step6], dim=1)
    assert cache.keys[0].shape[1] == 1  # multi-query: one KV head is stored
    assert torch.allclose(incremental, full, atol=1e-5)


def test_config_round_trip_through_registry():
    config = palm_config(vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4)
    raw = config_to_dict(config)
    assert raw["model_type"] == "palm" and raw["num_key_value_heads"] == 1
    assert config_from_dict(raw) == config
    assert isinstance(build_model(config), PalmForCausalLM)


def test_bad_configs_name_the_value():
    raw = palm_config_to_dict(palm_config(vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4))
    with pytest.raises(ModelLoadError, match="num_key_value_heads=4"):
        palm_config_from_dict({**raw, "num_key_value_heads": 4})
    with pytest.raises(ModelLoadError, match="'vocab_size'"):
        palm_config_from_dict({k: v for k, v in raw.items() if k != "vocab_size"})
    with pytest.raises(ModelLoadError, match="model_type='gpt9'"):
        config_from_dict({**raw, "model_type": "gpt9"})


def test_trainer_takes_palm_like_any_model(tmp_path):
    """LoRA adapters and the reward model's save/load work on PaLM through the registry."""
    from trainer.lora import apply_lora
    from trainer.reward_model import ScalarHeadModel, load_reward_model, save_reward_model

    policy = tiny_model(3)
    ids = torch.tensor([[5, 17, 3, 88, 42]])
    reward = ScalarHeadModel.from_policy(policy)
    saved = save_reward_model(reward, tmp_path / "rm")
    with torch.no_grad():
        assert torch.allclose(load_reward_model(saved)(ids, torch.tensor([5])), reward(ids, torch.tensor([5])))

    wrapped = apply_lora(policy, rank=2, alpha=4)
    assert "layers.0.self_attn.q_proj" in wrapped and len(wrapped) == 8  # 4 projections x 2 blocks
    trainable = [name for name, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    policy(ids).sum().backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)

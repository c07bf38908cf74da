"""LoRA adapters and layer freezing on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.models.llama import LlamaForCausalLM
from trainer import lora
from tiny_models import tiny_llama
from trainer.errors import TrainerError


def tiny_model(seed: int = 0, tie: bool = True) -> LlamaForCausalLM:
    return tiny_llama(61, seed, num_hidden_layers=3, tie_word_embeddings=tie)


def randomise_adapters(model: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora.lora_modules(model):
            m.lora_b.copy_(torch.randn(m.lora_b.shape, generator=gen) * 0.5)


IDS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 60, 0, 11]])


def test_lora_linear_by_hand():
    base = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.eye(2))
    layer = lora.LoRALinear(base, rank=1, alpha=2.0)  # scaling 2
    with torch.no_grad():
        layer.lora_a.copy_(torch.tensor([[1.0, 0.0]]))
        layer.lora_b.copy_(torch.tensor([[0.0], [2.0]]))
    # base [1, 3]; x A^T = 1; B * 1 = [0, 2]; times 2 = [0, 4]; total [1, 7]
    assert layer(torch.tensor([[1.0, 3.0]])).tolist() == [[1.0, 7.0]]
    layer.enabled = False
    assert layer(torch.tensor([[1.0, 3.0]])).tolist() == [[1.0, 3.0]]


def test_fresh_adapters_change_nothing_and_disabled_restores_reference():
    model = tiny_model()
    before = model(IDS)
    wrapped = lora.apply_lora(model, rank=4, alpha=8)
    assert len(wrapped) == 3 * 4 and "layers.0.self_attn.q_proj" in wrapped
    assert torch.allclose(model(IDS), before)  # B starts at zero
    randomise_adapters(model)
    assert not torch.allclose(model(IDS), before, atol=1e-4)
    with lora.disabled(model):
        assert torch.allclose(model(IDS), before, atol=1e-6)
    assert not torch.allclose(model(IDS), before, atol=1e-4)  # re-enabled afterwards


def test_only_adapters_train_and_receive_gradients():
    model = tiny_model()
    lora.apply_lora(model, rank=2, alpha=4, targets=lora.ATTENTION_TARGETS + lora.MLP_TARGETS, top_layers=1)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("model.layers.2.") and n.endswith(("lora_a", "lora_b")) for n in names)
    assert len(names) == 2 * 7
    model(IDS).sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


@pytest.mark.parametrize("tie", [True, False])
def test_merged_state_dict_loads_into_a_plain_model(tie):
    model = tiny_model(tie=tie)
    lora.apply_lora(model, rank=4, alpha=8)
    randomise_adapters(model)
    expected = model(IDS)
    plain = tiny_model(seed=5, tie=tie)
    state = lora.merged_state_dict(model)
    assert not any("lora" in k or ".base." in k for k in state)
    plain.load_state_dict(state)
    assert torch.allclose(plain(IDS), expected, atol=1e-5)
    # The LoRA model itself is untouched by merged_state_dict.
    assert lora.has_lora(model) and torch.allclose(model(IDS), expected)
    lora.merge_and_unload(model)
    assert not lora.has_lora(model)
    assert torch.allclose(model(IDS), expected, atol=1e-5)
    assert set(model.state_dict()) == set(plain.state_dict())


def test_adapter_state_dict_round_trip():
    model = tiny_model()
    lora.apply_lora(model, rank=2, alpha=2)
    randomise_adapters(model)
    saved = lora.adapter_state_dict(model)
    assert saved and all(k.endswith(("lora_a", "lora_b")) for k in saved)
    other = tiny_model()
    lora.apply_lora(other, rank=2, alpha=2)
    other.load_state_dict(saved, strict=False)
    assert torch.allclose(other(IDS), model(IDS))


def test_freeze_except_top_layers():
    model = tiny_model(tie=False)
    lora.freeze_except_top_layers(model, 2)
    trainable = {n.split(".")[2] if n.startswith("model.layers") else n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1", "2", "model.norm.weight"}
    trained, total = lora.count_parameters(model)
    assert 0 < trained < total


def test_bad_options_are_clear_errors():
    model = tiny_model()
    with pytest.raises(TrainerError, match="rank"):
        lora.apply_lora(model, rank=0)
    with pytest.raises(TrainerError, match="'qkv'"):
        lora.apply_lora(model, targets=("qkv",))
    with pytest.raises(TrainerError, match="between 1 and 3, got 7"):
        lora.freeze_except_top_layers(model, 7)


def test_folded_adapters_compute_what_the_adapters_do_and_come_back(tmp_path):
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.sampling import SamplingParams
    from tiny_models import make_tiny_model_dir

    loaded = load_model(make_tiny_model_dir(tmp_path / "tiny", num_layers=2))
    model = loaded.model
    lora.apply_lora(model, rank=4, alpha=8, targets=lora.ATTENTION_TARGETS + lora.MLP_TARGETS, top_layers=1)
    with torch.no_grad():
        for module in lora.lora_modules(model):
            module.lora_b.normal_(std=0.05)
    ids = torch.tensor([[3, 9, 4, 7, 1]])
    with torch.no_grad():
        adapted = model(ids)
        with lora.disabled(model):
            base = model(ids)
        with lora.folded(model):
            assert not lora.has_lora(model)
            assert torch.allclose(model(ids), adapted, atol=1e-5)
        with lora.disabled(model), lora.folded(model):
            assert torch.allclose(model(ids), base, atol=1e-6)
    assert len(list(lora.lora_modules(model))) == 7  # every adapter is back, trainable
    assert all(p.requires_grad for m in lora.lora_modules(model) for p in (m.lora_a, m.lora_b))
    # Greedy decoding through the engine gives the same tokens folded or not.
    engine = LLMEngine(loaded, max_batch_size=2)
    params = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True)
    plain = engine.generate([[3, 9, 4]], params)[0].completions[0].token_ids
    with lora.folded(model):
        fast = engine.generate([[3, 9, 4]], params)[0].completions[0].token_ids
    assert list(plain) == list(fast)


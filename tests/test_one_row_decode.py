"""The compiled batch-1 decoder gives the model's own greedy tokens and logprobs, reads the
weights as they are now, and steps aside for models it does not cover."""

from __future__ import annotations

import pytest
import torch

from engine.engine import LLMEngine
from engine.loading import load_model
from engine.one_row_decode import OneRowDecoder, supports
from engine.quantize import quantize_int8
from engine.sampling import SamplingParams
from tiny_models import make_tiny_model_dir
from trainer.lora import apply_lora

PARAMS = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True, logprobs=True)
PROMPT = [5, 6, 7, 8, 9, 10, 11]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tiny_with_biases(tmp_path_factory):
    """Qwen2-style q/k/v biases, and a tied LM head."""
    directory = make_tiny_model_dir(tmp_path_factory.mktemp("qwen") / "model", model_type="qwen2", tie_word_embeddings=True)
    return load_model(directory)


def _count_one_row_steps(monkeypatch) -> list[int]:
    calls = []
    original = OneRowDecoder.logits

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(OneRowDecoder, "logits", counting)
    return calls


def _generate(loaded, fast: bool, prompt=PROMPT):
    return LLMEngine(loaded, max_batch_size=4, fast_cpu_kernels=fast).generate([prompt], PARAMS)[0].completions[0]


@pytest.mark.parametrize("which", ["tiny", "tiny_with_biases"])
def test_greedy_tokens_and_logprobs_match_the_models_own_forward(which, request, monkeypatch):
    loaded = request.getfixturevalue(which)
    assert supports(loaded.model) and OneRowDecoder.available(loaded.model)
    plain = _generate(loaded, fast=False)
    steps = _count_one_row_steps(monkeypatch)
    fused = _generate(loaded, fast=True)
    assert len(steps) == PARAMS.max_new_tokens - 1  # every decode step took the compiled path
    assert fused.token_ids == plain.token_ids
    torch.testing.assert_close(torch.tensor(fused.logprobs), torch.tensor(plain.logprobs), rtol=0, atol=1e-4)


def test_weights_changed_in_place_between_requests_are_used(tmp_path):
    loaded = load_model(make_tiny_model_dir(tmp_path / "model", seed=3))
    engine = LLMEngine(loaded, max_batch_size=4)
    before = engine.generate([PROMPT], PARAMS)[0].completions[0]
    with torch.no_grad():  # as an optimizer step would: same tensors, new values
        for layer in loaded.model.model.layers:
            layer.mlp.down_proj.weight.mul_(-3.0)
            layer.input_layernorm.weight.add_(0.5)
    after = engine.generate([PROMPT], PARAMS)[0].completions[0]
    reference = _generate(loaded, fast=False)
    assert after.logprobs != before.logprobs
    assert after.token_ids == reference.token_ids
    torch.testing.assert_close(torch.tensor(after.logprobs), torch.tensor(reference.logprobs), rtol=0, atol=1e-4)


def test_models_it_does_not_cover_take_their_own_forward(tmp_path, monkeypatch):
    lora = load_model(make_tiny_model_dir(tmp_path / "lora"))
    apply_lora(lora.model)
    int8 = load_model(make_tiny_model_dir(tmp_path / "int8"))
    quantize_int8(int8.model)
    double = load_model(make_tiny_model_dir(tmp_path / "double"))
    double.model.double()
    for loaded in (lora, int8, double):
        assert not supports(loaded.model)
    steps = _count_one_row_steps(monkeypatch)
    out = LLMEngine(lora, max_batch_size=4).generate([PROMPT], PARAMS)[0].completions[0]
    assert not steps and len(out.token_ids) == PARAMS.max_new_tokens


def test_palm_models_are_not_covered(tmp_path):
    from engine.models.palm import PalmForCausalLM, palm_config

    assert not supports(PalmForCausalLM(palm_config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)))


def test_without_a_compiler_batch_one_falls_back_to_the_models_forward(tiny, monkeypatch):
    monkeypatch.setattr(OneRowDecoder._pieces, "result", None)  # as if compiling had failed here
    steps = _count_one_row_steps(monkeypatch)
    out = _generate(tiny, fast=True)
    assert not steps
    assert out.token_ids == _generate(tiny, fast=False).token_ids

"""The C++ decode step gives the model's own greedy tokens and logprobs, the same bits for a
row alone or in a batch, reads the weights as they are now, and steps aside for models it
does not cover."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch

import engine.kernels.llama_decode as llama_decode
import engine.runner as engine_runner
from engine.engine import LLMEngine
from engine.kernels.built_once import NOT_TRIED
from engine.kernels import decode_probe
from engine.loading import load_model
from engine.sampling import SamplingParams
from decode_helpers import kernel_steps
from tiny_models import make_tiny_model_dir
from trainer.lora import apply_lora

PARAMS = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True, logprobs=True)
PROMPT = [5, 6, 7, 8, 9, 10, 11]


def _kernel_step():
    """The kernel's call, as the probe takes it."""
    return partial(llama_decode._call, llama_decode._function.get())


def _generate(loaded, fast: bool, prompts=(PROMPT,), params=PARAMS):
    engine = LLMEngine(loaded, max_batch_size=8, fast_cpu_kernels=fast)
    return [out.completions[0] for out in engine.generate(list(prompts), params)]


def test_the_kernel_builds_and_passes_its_probe_here():
    # CI machines have a C++ compiler, so the kernel must really be in use there.
    assert llama_decode.available()


@pytest.mark.parametrize("heads, kv_heads, head_dim", [
    (10, 1, 20),  # more query heads per kv head than attention takes at once; head_dim not a multiple of 16
    (3, 3, 32),  # no grouping
])
def test_the_kernel_agrees_with_the_model_on_other_head_shapes(heads, kv_heads, head_dim):
    config = dataclasses.replace(
        decode_probe.PROBE_CONFIG, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim
    )
    assert decode_probe.probe(_kernel_step(), config=config)


@pytest.mark.parametrize("block_size", [4, 24, 32])
def test_the_kernel_agrees_with_the_model_with_other_block_sizes(block_size):
    # Attention scores 16 cached tokens of a block at a time: fewer than 16 in a block (4),
    # a block of one full group and a partial one (24), two full groups (32).
    assert decode_probe.probe(_kernel_step(), block_size=block_size)


def test_the_probe_rejects_a_kernel_that_computes_nothing():
    assert not decode_probe.probe(lambda *args: None)


def test_probing_the_kernel_leaves_torchs_random_state_alone(monkeypatch):
    # The probe runs at warm-up, inside the chat and the trainer: it must not change what
    # a seeded caller draws next.
    monkeypatch.setattr(llama_decode._function, "result", NOT_TRIED)
    torch.manual_seed(123)
    want = torch.rand(4)
    torch.manual_seed(123)
    assert llama_decode.available()
    assert torch.equal(torch.rand(4), want)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_qwen2"])
def test_greedy_tokens_and_logprobs_match_the_models_own_forward(which, request, monkeypatch):
    loaded = request.getfixturevalue(which)
    prompts = [PROMPT, [12, 13], list(range(20, 57))]  # mixed lengths, some past a 16-token block
    plain = _generate(loaded, False, prompts)
    steps = kernel_steps(monkeypatch)
    fast = _generate(loaded, True, prompts)
    assert sum(rows for rows, _ in steps) == len(prompts) * (PARAMS.max_new_tokens - 1)  # every decode row took the kernel
    for ours, theirs in zip(fast, plain):
        assert ours.token_ids == theirs.token_ids
        torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), rtol=0, atol=1e-4)


def test_a_large_batch_takes_the_kernel_and_matches_the_models_own_forward(tiny_llama, monkeypatch):
    # 70 rows: eight full 8-row tiles, then the 4- and 2-row tiles for the other 6.
    prompts = [[5 + i % 50, 6 + i % 7, 7 + i % 11] + list(range(20, 20 + i % 19)) for i in range(70)]
    params = SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True, logprobs=True)

    def generate():
        engine = LLMEngine(tiny_llama, max_batch_size=128)
        return [out.completions[0] for out in engine.generate(prompts, params)]

    monkeypatch.setattr(engine_runner, "DECODE_KERNEL_MAX_ROWS", 0)  # every step through the model's forward
    plain = generate()
    monkeypatch.setattr(engine_runner, "DECODE_KERNEL_MAX_ROWS", 128)
    steps = kernel_steps(monkeypatch)
    fast = generate()
    assert steps and max(rows for rows, _ in steps) == 70
    for ours, theirs in zip(fast, plain):
        assert ours.token_ids == theirs.token_ids
        torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), rtol=0, atol=1e-4)


def _decode_beside(loaded, prompt: list[int], others: list[list[int]], prompt_first: bool, params: SamplingParams):
    """`prompt`'s completion while `others` decode in the same steps. Each group is
    prefilled in its own step (packed prefills of different groups need not agree to the
    bit: oneDNN's products may sum differently at different lengths), so only the decode
    steps see a different batch."""
    engine = LLMEngine(loaded, max_batch_size=8)
    groups = [[prompt], others] if prompt_first else [others, [prompt]]
    ids = []
    for group in groups:
        ids.append([engine.add_request(p, params) for p in group])
        engine.step()
    while engine.has_unfinished():
        engine.step()
    target = ids[0][0] if prompt_first else ids[1][0]
    return engine.pop_output(target).completions[0]


def test_a_row_gets_the_same_bits_alone_and_in_a_batch(tiny_llama):
    # Sampled at temperature 1, so logprobs of every position are compared, not just argmaxes.
    params = SamplingParams(temperature=1.0, max_new_tokens=20, ignore_eos=True, logprobs=True, seed=7)
    others = [[12, 13], list(range(20, 57)), [30, 31, 32, 33, 34]]
    alone = _generate(tiny_llama, True, [PROMPT], params)[0]
    for prompt_first in (True, False):
        ours = _decode_beside(tiny_llama, PROMPT, others, prompt_first, params)
        assert ours.token_ids == alone.token_ids
        assert ours.logprobs == alone.logprobs  # exactly


def test_weights_changed_in_place_between_requests_are_used(tmp_path):
    loaded = load_model(make_tiny_model_dir(tmp_path / "model", seed=3))
    engine = LLMEngine(loaded, max_batch_size=4)
    before = engine.generate([PROMPT], PARAMS)[0].completions[0]
    with torch.no_grad():  # as an optimizer step would: same tensors, new values
        for layer in loaded.model.model.layers:
            layer.mlp.down_proj.weight.mul_(-3.0)
            layer.input_layernorm.weight.add_(0.5)
    after = engine.generate([PROMPT], PARAMS)[0].completions[0]
    reference = _generate(loaded, fast=False)[0]
    assert after.logprobs != before.logprobs
    assert after.token_ids == reference.token_ids
    torch.testing.assert_close(torch.tensor(after.logprobs), torch.tensor(reference.logprobs), rtol=0, atol=1e-4)


def test_weights_given_new_storage_between_requests_are_read_there(tmp_path):
    # The kernel keeps raw addresses: a weight whose data moved must not be read where it was.
    loaded = load_model(make_tiny_model_dir(tmp_path / "model", seed=4))
    engine = LLMEngine(loaded, max_batch_size=4)
    before = engine.generate([PROMPT], PARAMS)[0].completions[0]
    table = llama_decode.weight_table(loaded.model)
    for layer in loaded.model.model.layers:
        layer.mlp.up_proj.weight.data = layer.mlp.up_proj.weight.data * -2.0  # a new tensor; the old one is freed
    assert not torch.equal(llama_decode.weight_table(loaded.model), table)
    after = engine.generate([PROMPT], PARAMS)[0].completions[0]
    reference = _generate(loaded, fast=False)[0]
    assert after.logprobs != before.logprobs
    torch.testing.assert_close(torch.tensor(after.logprobs), torch.tensor(reference.logprobs), rtol=0, atol=1e-4)


def test_lora_added_to_a_live_engine_takes_the_models_forward(tmp_path, monkeypatch):
    loaded = load_model(make_tiny_model_dir(tmp_path / "model", seed=5))
    engine = LLMEngine(loaded, max_batch_size=4)
    engine.generate([PROMPT], PARAMS)
    assert llama_decode.weight_table(loaded.model) is not None
    apply_lora(loaded.model)
    with torch.no_grad():  # adapters that change the output, unlike freshly initialised ones
        for name, parameter in loaded.model.named_parameters():
            if "lora_b" in name.lower():
                parameter.fill_(0.05)
    steps = kernel_steps(monkeypatch)
    after = engine.generate([PROMPT], PARAMS)[0].completions[0]
    assert not steps
    reference = _generate(loaded, fast=False)[0]
    assert after.token_ids == reference.token_ids
    torch.testing.assert_close(torch.tensor(after.logprobs), torch.tensor(reference.logprobs), rtol=0, atol=1e-4)


def test_models_it_does_not_cover_take_their_own_forward(tmp_path, monkeypatch):
    lora = load_model(make_tiny_model_dir(tmp_path / "lora"))
    apply_lora(lora.model)
    double = load_model(make_tiny_model_dir(tmp_path / "double"))
    double.model.double()
    for loaded in (lora, double):
        assert llama_decode.weight_table(loaded.model) is None
    steps = kernel_steps(monkeypatch)
    out = LLMEngine(lora, max_batch_size=4).generate([PROMPT], PARAMS)[0].completions[0]
    assert not steps and len(out.token_ids) == PARAMS.max_new_tokens


def test_palm_models_are_not_covered():
    from engine.models.palm import PalmForCausalLM, palm_config

    model = PalmForCausalLM(palm_config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4))
    assert llama_decode.weight_table(model) is None


def test_without_the_kernel_decode_falls_back_to_the_models_forward(tiny_llama, monkeypatch):
    monkeypatch.setattr(llama_decode._function, "result", None)  # as if building had failed here
    steps = kernel_steps(monkeypatch)
    out = _generate(tiny_llama, fast=True)[0]
    assert not steps
    assert out.token_ids == _generate(tiny_llama, fast=False)[0].token_ids

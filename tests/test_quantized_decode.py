"""Decoding from quantized weights: the C++ step computes what the quantized products
mean, a row gets the same bits alone and in a batch, the copy follows the weights, a
GGUF file's blocks are served as they are, and the cost in quality is small."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from functools import partial

import pytest
import torch

import engine.kernels.llama_decode as llama_decode
from engine.engine import LLMEngine
from engine.errors import InvalidRequestError
from engine.export.gguf import export_gguf
from engine.kernels import decode_probe
from engine.kernels.forced_decode import forced_logits
from engine.kernels.quant_types import KINDS
from engine.kernels.quantize import quantize_matrix
from engine.kernels.quantized_copy import HEAD_QUANT, QuantizedCopy, quantized_copy
from engine.loading import load_model
from engine.sampling import SamplingParams
from decode_helpers import kernel_steps
from tiny_models import make_tiny_model_dir

PARAMS = SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True, logprobs=True)
PROMPT = [5, 6, 7, 8, 9, 10, 11]
QUANTS = ["q8_0", "q4_0"]


def _kernel_step():
    return partial(llama_decode._call, llama_decode._function.get())


def _generate(loaded, quant, prompts=(PROMPT,), params=PARAMS):
    engine = LLMEngine(loaded, max_batch_size=8, quant=quant)
    return [out.completions[0] for out in engine.generate(list(prompts), params)]


@pytest.mark.parametrize("quant", QUANTS)
def test_the_quantized_kernel_passes_its_probe_here(quant):
    # CI machines have a C++ compiler, so quantized decode must really be in use there.
    assert llama_decode.available(quant)


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("heads, kv_heads, head_dim, hidden, intermediate", [
    (10, 1, 20, 40, 72),  # widths that leave part of a block, and part of a pair, empty
    (4, 4, 32, 128, 256),  # whole pairs, several of them per row; several 4-row tiles of weights
    (4, 2, 32, 96, 160),  # a kv head's query heads fill a pair: attention quantizes its own output
    (6, 2, 16, 48, 80),
])
def test_the_quantized_kernel_computes_the_quantized_products(quant, heads, kv_heads, head_dim, hidden, intermediate):
    config = dataclasses.replace(decode_probe.PROBE_CONFIG, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                 head_dim=head_dim, hidden_size=hidden, intermediate_size=intermediate)
    assert decode_probe.probe(_kernel_step(), quant, config)


@pytest.mark.parametrize("block_size", [4, 32])
def test_the_quantized_kernel_reads_the_paged_cache_at_other_block_sizes(block_size):
    assert decode_probe.probe(_kernel_step(), "q4_0", block_size=block_size)


def test_the_quantized_probe_rejects_fp32_products():
    # A kernel that ignored the quantized table would compute with the fp32 weights.
    def fp32_step(model, table, *args):
        return llama_decode._call(llama_decode._function.get(), model, llama_decode.weight_table(model), *args)

    assert not decode_probe.probe(fp32_step, "q4_0")


def test_the_kernel_matches_the_reference_to_float_rounding(tiny_llama):
    # Tighter than the probe's bound: on this machine no input rounds differently.
    windows = [list(range(3, 40)), list(range(60, 97))]
    copy = QuantizedCopy("q8_0")
    got = forced_logits(tiny_llama.model, windows, copy)
    with torch.inference_mode(), decode_probe.reference_forward(tiny_llama.model, copy):
        want = tiny_llama.model(torch.tensor(windows))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("which", ["tiny_llama", "tiny_qwen2"])
def test_every_decode_step_reads_the_quantized_copy(quant, which, request, monkeypatch):
    loaded = request.getfixturevalue(which)
    prompts = [PROMPT, [12, 13], list(range(20, 57))]
    steps = kernel_steps(monkeypatch)
    quantized = _generate(loaded, quant, prompts)
    tables = [table for _, table in steps]
    assert len(tables) == PARAMS.max_new_tokens - 1
    kinds = {int(kind) for table in tables for kind in table[:, 2]}
    assert kinds == {KINDS["none"], KINDS[quant], KINDS[HEAD_QUANT]}  # fp32 norms and biases, the type, the head
    plain = _generate(loaded, "none", prompts)
    for ours, theirs in zip(quantized, plain):
        assert len(ours.token_ids) == PARAMS.max_new_tokens
        # The first token comes from the fp32 prefill; decoding from other weights changes the rest.
        assert ours.token_ids[0] == theirs.token_ids[0]
        assert ours.logprobs[0] == pytest.approx(theirs.logprobs[0], abs=1e-5)
    assert any(ours.logprobs[1:] != theirs.logprobs[1:] for ours, theirs in zip(quantized, plain))


@pytest.mark.parametrize("quant", QUANTS)
def test_a_row_gets_the_same_bits_alone_and_in_a_batch(tiny_llama, quant):
    params = SamplingParams(temperature=1.0, max_new_tokens=16, ignore_eos=True, logprobs=True, seed=7)
    alone = _generate(tiny_llama, quant, [PROMPT], params)[0]
    engine = LLMEngine(tiny_llama, max_batch_size=8, quant=quant)
    target = engine.add_request(PROMPT, params)
    engine.step()  # the prompt's prefill alone, as above; then decode beside others
    for prompt in ([12, 13], list(range(20, 57)), [30, 31, 32, 33, 34], [40] * 9):
        engine.add_request(prompt, params)
    while engine.has_unfinished():
        engine.step()
    beside = engine.pop_output(target).completions[0]
    assert beside.token_ids == alone.token_ids
    assert beside.logprobs == alone.logprobs  # exactly


def test_weights_changed_in_place_are_quantized_again(tmp_path, monkeypatch):
    loaded = load_model(make_tiny_model_dir(tmp_path / "model", seed=3))
    engine = LLMEngine(loaded, max_batch_size=4, quant="q8_0")
    before = engine.generate([PROMPT], PARAMS)[0].completions[0]
    with torch.no_grad():  # as an optimizer step would: same tensors, new values
        for layer in loaded.model.model.layers:
            layer.mlp.down_proj.weight.mul_(-3.0)
    steps = kernel_steps(monkeypatch)
    after = engine.generate([PROMPT], PARAMS)[0].completions[0]
    assert steps and after.logprobs != before.logprobs
    fresh = _generate(loaded, "q8_0")[0]  # a new engine, a new copy of the weights as they are now
    assert after.token_ids == fresh.token_ids
    assert after.logprobs == fresh.logprobs


def test_the_lm_head_is_kept_in_8_bits(tiny_qwen2):
    copy = QuantizedCopy("q4_0")
    table = llama_decode.weight_table(tiny_qwen2.model, copy)
    head_kind = int(table[-1, 2])
    assert head_kind == 1 and HEAD_QUANT == "q8_0"
    assert int(table[1, 2]) == 2  # layer 0's q projection


@pytest.mark.parametrize("quant", QUANTS)
def test_a_gguf_files_blocks_are_served_as_they_are(tmp_path, quant, monkeypatch):
    source = make_tiny_model_dir(tmp_path / "model")
    gguf = export_gguf(source, tmp_path / f"model.{quant}.gguf", quant)
    loaded = load_model(gguf)
    copy = quantized_copy(loaded, quant)
    made = []
    monkeypatch.setattr("engine.kernels.quantized_copy.quantize_matrix",
                        lambda *args: made.append(args) or quantize_matrix(*args))
    table = llama_decode.weight_table(loaded.model, copy)
    assert table is not None and not made  # nothing quantized here: every matrix came from the file
    layers = loaded.config.num_hidden_layers
    assert len(copy.from_file) == 7 * layers + 1
    # The file's blocks are what quantizing the source's own fp32 weights gives.
    original = load_model(source).model.state_dict()
    for name, _ in loaded.model.named_parameters():
        if name in copy.from_file:
            is_head = name in ("lm_head.weight", "model.embed_tokens.weight") and name == _head_name(loaded)
            want = quantize_matrix(original[name], HEAD_QUANT if is_head else quant)
            got = copy.matrix(name, dict(loaded.model.named_parameters())[name], is_head)
            assert torch.equal(got.data, want.data), name
            assert torch.equal(got.scales, want.scales), name


def _head_name(loaded) -> str:
    names = {id(p): name for name, p in loaded.model.named_parameters()}
    return names[id(loaded.model.lm_head.weight)]


def test_a_gguf_files_blocks_are_not_used_once_the_weights_changed(tmp_path):
    gguf = export_gguf(make_tiny_model_dir(tmp_path / "model"), tmp_path / "model.q8_0.gguf", "q8_0")
    loaded = load_model(gguf)
    with torch.no_grad():
        loaded.model.model.layers[0].self_attn.q_proj.weight.mul_(2.0)
    copy = quantized_copy(loaded, "q8_0")
    llama_decode.weight_table(loaded.model, copy)
    assert "model.layers.0.self_attn.q_proj.weight" not in copy.from_file
    assert "model.layers.0.self_attn.k_proj.weight" in copy.from_file


def test_quantized_types_decode_on_the_cpu_only_and_by_name(tiny_llama):
    with pytest.raises(InvalidRequestError, match="'q3'"):
        LLMEngine(tiny_llama, quant="q3")


@pytest.mark.parametrize("quant, largest_kl", [("q8_0", 1e-3), ("q4_0", 0.1)])
def test_quantized_logits_stay_close_to_fp32(tiny_llama, quant, largest_kl):
    windows = [list(range(3, 40)), list(range(60, 97))]
    reference = forced_logits(tiny_llama.model, windows, None).log_softmax(-1)
    quantized = forced_logits(tiny_llama.model, windows, QuantizedCopy(quant)).log_softmax(-1)
    kl = torch.nn.functional.kl_div(quantized, reference, log_target=True, reduction="none").sum(-1)
    assert 0 < float(kl.mean()) < largest_kl


def test_a_weight_table_keeps_its_quantized_matrices_alive(tiny_llama):
    # The kernel reads raw addresses: a table held after its copy is gone must still point
    # at live memory, and nothing must outlive the table.
    copy = QuantizedCopy("q4_0")
    table = llama_decode.weight_table(tiny_llama.model, copy)
    matrices = [weakref.ref(made.matrix.data) for made in copy._made.values()]
    del copy
    llama_decode.weight_table(tiny_llama.model)  # the model's cached table is now the fp32 one
    gc.collect()
    assert all(ref() is not None for ref in matrices)
    del table
    gc.collect()
    assert all(ref() is None for ref in matrices)

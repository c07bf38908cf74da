"""The engine's CPU linear kernels compute what F.linear computes, follow weight updates,
leave autograd alone, and keep the engine's greedy output unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import engine.kernels.cpu_linear as cpu_linear_module
import engine.kernels.few_rows_gemm as few_rows_gemm
import engine.kernels.llama_decode as llama_decode
from engine.engine import LLMEngine
from engine.kernels.built_once import NOT_TRIED
from engine.kernels.cpu_linear import cpu_linear, fast_linear
from engine.loading import load_model
from engine.sampling import SamplingParams
from tiny_models import make_tiny_model_dir
from trainer.lora import apply_lora


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))


# 37 and 200 rows go to oneDNN padded (to 40 and 208 rows), 64 unpadded.
@pytest.mark.parametrize("shape", [(1, 96), (1, 1, 96), (5, 96), (3, 1, 96), (37, 96), (64, 96), (1, 200, 96)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_cpu_linear_matches_f_linear(shape, with_bias):
    torch.manual_seed(0)
    weight, x = torch.randn(48, 96), torch.randn(*shape)
    bias = torch.randn(48) if with_bias else None
    with torch.inference_mode():
        ours = cpu_linear(x, weight, bias)
    assert ours.shape == (*shape[:-1], 48)
    torch.testing.assert_close(ours, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_onednn_sees_few_distinct_row_counts_and_little_padding():
    # oneDNN keeps a compiled primitive per shape, so the row counts it is handed must come
    # from a small set, whatever lengths packed prefills have.
    sizes = {cpu_linear_module.onednn_rows(rows) for rows in range(1, 4097)}
    assert len(sizes) < 70
    for rows in range(1, 20000):
        padded = cpu_linear_module.onednn_rows(rows)
        assert rows <= padded <= max(rows + 3, rows * 1.125), rows


@pytest.mark.parametrize("rows", [1, 3])
def test_without_the_cpp_kernel_products_fall_back_to_onednn(rows, monkeypatch):
    monkeypatch.setattr(few_rows_gemm._function, "result", None)  # as if building had failed
    assert few_rows_gemm.few_rows_linear(torch.ones(1, 4), torch.ones(2, 4)) is None
    weight, x = torch.randn(48, 96), torch.randn(rows, 96)
    with torch.inference_mode():
        torch.testing.assert_close(cpu_linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_results_follow_in_place_weight_updates():
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 48, bias=False)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    for rows in (1, 4):
        x = torch.randn(rows, 96)
        with torch.inference_mode():
            before = cpu_linear(x, layer.weight)
        layer(x).square().sum().backward()
        optimizer.step()  # changes the weight in place, as PPO does between rollouts
        with torch.inference_mode():
            after = cpu_linear(x, layer.weight)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, F.linear(x, layer.weight.detach()), rtol=1e-5, atol=1e-5)


def test_mode_leaves_autograd_and_other_dtypes_alone():
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 48)
    x = torch.randn(3, 96)
    layer(x).sum().backward()
    expected = layer.weight.grad.clone()
    layer.zero_grad()
    with fast_linear(torch.device("cpu"), torch.float32):
        out = layer(x)
        assert out.grad_fn is not None  # recorded by autograd: the plain F.linear ran
        out.sum().backward()
        half = layer.to(torch.float64)(x.double())  # other dtypes pass through unchanged
    assert half.dtype == torch.float64
    torch.testing.assert_close(layer.weight.grad.float(), expected)


def test_engine_output_is_the_same_with_and_without_the_fast_kernels(tiny, tmp_path):
    # The plain Llama takes the C++ decode step; with LoRA adapters the model's own forward
    # runs with the few-row products of cpu_linear.
    with_lora = load_model(make_tiny_model_dir(tmp_path / "model"))
    apply_lora(with_lora.model)
    params = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True, logprobs=True)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19, 20]]
    for loaded in (tiny, with_lora):
        results = {}
        for fast in (False, True):
            engine = LLMEngine(loaded, max_batch_size=4, fast_cpu_kernels=fast)
            batched = engine.generate(prompts, params)
            alone = engine.generate(prompts[:1], params)  # one row
            results[fast] = batched + alone
        for plain, fast in zip(results[False], results[True]):
            assert fast.completions[0].token_ids == plain.completions[0].token_ids
            torch.testing.assert_close(torch.tensor(fast.completions[0].logprobs),
                                       torch.tensor(plain.completions[0].logprobs), rtol=0, atol=1e-4)


def test_warm_up_builds_the_kernels_before_any_request(tiny, monkeypatch):
    monkeypatch.setattr(few_rows_gemm._function, "result", NOT_TRIED)
    monkeypatch.setattr(llama_decode._function, "result", NOT_TRIED)
    LLMEngine(tiny, fast_cpu_kernels=False).warm_up()
    assert few_rows_gemm._function.result is NOT_TRIED  # PyTorch's own path needs nothing
    assert llama_decode._function.result is NOT_TRIED
    LLMEngine(tiny).warm_up()
    assert few_rows_gemm._function.result and llama_decode._function.result


def test_an_fp32_engine_compiles_nothing_with_torch_compile(tiny):
    # The C++ kernels replaced inductor for fp32 decode: no first reply waits for dynamo.
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    engine = LLMEngine(tiny)
    engine.warm_up()
    engine.generate([[5, 6, 7, 8]], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs

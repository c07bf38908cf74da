"""The batched engine against a naive one-sequence loop on a tiny random model."""

from __future__ import annotations

import gc
import random

import psutil
import pytest
import torch

from engine.engine import LLMEngine
from engine.errors import InvalidRequestError
from engine.loading import load_model
from engine.sampling import SamplingParams
from engine.streaming import StreamingEngine
from tiny_models import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))


def naive_greedy(loaded, prompt: list[int], num_tokens: int) -> list[int]:
    """Greedy decoding by re-running the whole sequence each step: no cache, no batch."""
    ids = list(prompt)
    out = []
    device = next(loaded.model.parameters()).device
    with torch.no_grad():
        for _ in range(num_tokens):
            token = int(loaded.model(torch.tensor([ids], device=device))[0, -1].argmax())
            out.append(token)
            ids.append(token)
    return out


def random_prompts(count: int, vocab: int, seed: int, lengths=(1, 40)) -> list[list[int]]:
    rng = random.Random(seed)
    # Avoid the stop token (<|im_end|>) so that greedy runs are full length.
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(*lengths))] for _ in range(count)]


GREEDY = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)

# The runner's three decode paths (engine/runner.py): the C++ step, the model's own
# forward, and the fixed-shape steps that CUDA graphs record (run eagerly on the CPU).
DECODE_PATHS = {
    "cpp-step": {},
    "model-forward": {"fast_cpu_kernels": False},
    "fixed-shape": {"fast_cpu_kernels": False, "decode_graphs": True},
}


@pytest.fixture(params=list(DECODE_PATHS))
def decode_path(request) -> dict:
    """LLMEngine options selecting one decode path."""
    return DECODE_PATHS[request.param]


def test_batched_greedy_equals_single_sequence_greedy_for_mixed_lengths(tiny, decode_path):
    engine = LLMEngine(tiny, max_batch_size=8, block_size=4, **decode_path)
    prompts = random_prompts(6, tiny.config.vocab_size, seed=1)
    outputs = engine.generate(prompts, GREEDY)
    for prompt, out in zip(prompts, outputs):
        assert out.completions[0].token_ids == naive_greedy(tiny, prompt, 12)
        assert out.completions[0].finish_reason == "length"
    assert engine.num_cached_blocks == 0


def test_requests_joining_and_aborted_mid_flight(tiny, decode_path):
    engine = LLMEngine(tiny, max_batch_size=8, block_size=4, **decode_path)
    prompts = random_prompts(4, tiny.config.vocab_size, seed=2)
    first = engine.add_request(prompts[0], GREEDY)
    doomed = engine.add_request(prompts[1], GREEDY)
    for _ in range(3):
        engine.step()
    late = engine.add_request(prompts[2], GREEDY)  # joins while the others decode
    engine.step()
    engine.abort(doomed)
    later = engine.add_request(prompts[3], GREEDY)
    while engine.has_unfinished():
        engine.step()
    for rid, prompt in [(first, prompts[0]), (late, prompts[2]), (later, prompts[3])]:
        assert engine.pop_output(rid).completions[0].token_ids == naive_greedy(tiny, prompt, 12)
    aborted = engine.pop_output(doomed).completions[0]
    assert aborted.finish_reason == "abort"
    assert aborted.token_ids == naive_greedy(tiny, prompts[1], len(aborted.token_ids))
    assert 0 < len(aborted.token_ids) < 12
    assert engine.num_cached_blocks == 0


def test_n_samples_share_prefill_are_reproducible_and_differ(tiny, decode_path):
    engine = LLMEngine(tiny, max_batch_size=8, block_size=4, **decode_path)
    prompt = random_prompts(1, tiny.config.vocab_size, seed=3, lengths=(10, 10))[0]
    params = SamplingParams(temperature=1.0, n=4, seed=123, max_new_tokens=16, ignore_eos=True)
    a = engine.generate([prompt], params)[0]
    b = engine.generate([prompt], params)[0]
    texts_a = [c.token_ids for c in a.completions]
    assert texts_a == [c.token_ids for c in b.completions]
    assert len({tuple(t) for t in texts_a}) == 4
    # A seeded request gives the same samples alone or alongside other traffic.
    others = random_prompts(5, tiny.config.vocab_size, seed=4)
    mixed = engine.generate([others[0], prompt, *others[1:]], [GREEDY, params] + [GREEDY] * 4)
    assert [c.token_ids for c in mixed[1].completions] == texts_a
    assert engine.num_cached_blocks == 0


def _record_prefills(engine: LLMEngine) -> list[list[int]]:
    """The prompt lengths of every prefill call the engine makes from now on (the real prefill still runs)."""
    calls = []
    original = engine.runner.prefill
    engine.runner.prefill = lambda prompts, tables: calls.append([len(p) for p in prompts]) or original(prompts, tables)
    return calls


def test_prompt_is_prefilled_once_for_n_samples(tiny):
    engine = LLMEngine(tiny, max_batch_size=8, block_size=4)
    calls = _record_prefills(engine)
    engine.generate([[5] * 9], SamplingParams(temperature=1.0, n=3, seed=0, max_new_tokens=4))
    assert calls == [[9]]


def test_prompts_admitted_together_are_prefilled_in_one_forward(tiny, decode_path):
    engine = LLMEngine(tiny, max_batch_size=8, block_size=4, **decode_path)
    calls = _record_prefills(engine)
    # Lengths that end mid-block and on a block edge; one request with two samples.
    prompts = random_prompts(3, tiny.config.vocab_size, seed=12, lengths=(3, 13)) + [[7] * 8]
    params = [SamplingParams(temperature=1.0, seed=i, n=2 if i == 1 else 1, max_new_tokens=6, logprobs=True,
                             ignore_eos=True) for i in range(len(prompts))]
    outputs = engine.generate(prompts, params)
    assert calls == [[len(p) for p in prompts]]
    # Every token's logprob, the first included, matches a forward over that sequence alone:
    # the packed prompts neither saw each other nor wrote into each other's cache.
    for prompt, out in zip(prompts, outputs):
        for completion in out.completions:
            with torch.no_grad():
                logits = tiny.model(torch.tensor([prompt + completion.token_ids]))[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion.token_ids)[:, None])[:, 0]
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
    assert engine.num_cached_blocks == 0


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_logprobs_match_a_full_forward_pass(tiny, decode_path, temperature):
    engine = LLMEngine(tiny, max_batch_size=8, block_size=4, **decode_path)
    prompt = random_prompts(1, tiny.config.vocab_size, seed=5, lengths=(7, 7))[0]
    params = SamplingParams(
        temperature=temperature, top_p=0.9, n=2, seed=9, max_new_tokens=10, logprobs=True, ignore_eos=True
    )
    out = engine.generate([prompt], params)[0]
    for completion in out.completions:
        ids = torch.tensor([prompt + completion.token_ids])
        with torch.no_grad():
            logits = tiny.model(ids)[0, len(prompt) - 1 : -1]  # positions that predicted each token
        scale = temperature if temperature > 0 else 1.0
        expected = torch.log_softmax(logits / scale, -1).gather(-1, torch.tensor(completion.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_stop_strings_end_the_text_and_are_not_included(tiny):
    engine = LLMEngine(tiny, max_batch_size=4, block_size=4)
    prompt = random_prompts(1, tiny.config.vocab_size, seed=6, lengths=(5, 5))[0]
    full = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=30, ignore_eos=True))[0]
    text = full.completions[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop
    out = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=30, stop=[stop], ignore_eos=True))[0]
    assert out.completions[0].finish_reason == "stop"
    assert out.completions[0].text == text[: text.find(stop)]


def test_requests_wait_when_the_cache_is_full(tiny, decode_path):
    engine = LLMEngine(tiny, max_batch_size=8, max_cached_tokens=64, block_size=4, **decode_path)
    prompts = random_prompts(6, tiny.config.vocab_size, seed=7, lengths=(20, 30))
    outputs = engine.generate(prompts, GREEDY)  # at most one fits at a time
    for prompt, out in zip(prompts, outputs):
        assert out.completions[0].token_ids == naive_greedy(tiny, prompt, 12)
    assert engine.num_cached_blocks == 0


@pytest.mark.parametrize(
    "prompt_len, params, message",
    [
        (600, SamplingParams(max_new_tokens=4), "context"),
        (100, SamplingParams(max_new_tokens=500), "overflow"),
        (10, SamplingParams(n=0), "n must be"),
        (10, SamplingParams(temperature=-1), "temperature"),
        (10, SamplingParams(top_p=0), "top_p"),
        (10, SamplingParams(top_p=1.5), "top_p"),
        (10, SamplingParams(stop_token_ids=[99999]), "99999"),
    ],
)
def test_bad_requests_fail_before_any_work(tiny, prompt_len, params, message):
    engine = LLMEngine(tiny, max_batch_size=4)
    with pytest.raises(InvalidRequestError, match=message):
        engine.add_request([5] * prompt_len, params)
    assert not engine.has_unfinished()
    assert engine.num_cached_blocks == 0


def test_thousand_requests_leave_no_cache_and_flat_memory(tiny):
    engine = LLMEngine(tiny, max_batch_size=16, block_size=8, max_cached_tokens=4096)
    rng = random.Random(11)
    process = psutil.Process()

    def run_batch(count: int) -> None:
        prompts = random_prompts(count, tiny.config.vocab_size, seed=rng.randrange(1 << 30), lengths=(1, 60))
        params = [
            SamplingParams(temperature=rng.choice([0, 0.8]), max_new_tokens=rng.randint(1, 12), n=rng.choice([1, 1, 2]))
            for _ in prompts
        ]
        engine.generate(prompts, params)

    run_batch(200)  # warm-up: allocator pools and cache pages settle
    gc.collect()
    rss_before = process.memory_info().rss
    for _ in range(4):
        run_batch(200)
    gc.collect()
    growth = process.memory_info().rss - rss_before
    assert engine.num_cached_blocks == 0
    assert not engine._requests
    assert sorted(engine._free_rows) == list(range(16))
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 800 requests"


def test_streaming_front_streams_and_cancels(tiny):
    engine = LLMEngine(tiny, max_batch_size=4, block_size=4)
    front = StreamingEngine(engine).start()
    try:
        prompt = random_prompts(1, tiny.config.vocab_size, seed=8, lengths=(6, 6))[0]
        stream = front.submit(prompt, SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True))
        events = list(stream)
        out = stream.result(timeout=30)
        assert "".join(e.text_delta for e in events) == out.completions[0].text
        assert [e.token_id for e in events] == out.completions[0].token_ids == naive_greedy(tiny, prompt, 20)

        long = front.submit(prompt, SamplingParams(temperature=0, max_new_tokens=400, ignore_eos=True))
        seen = 0
        for event in long:
            seen += 1
            if seen == 3:
                long.cancel()
        result = long.result(timeout=30)
        assert result.completions[0].finish_reason == "abort"
        assert 3 <= len(result.completions[0].token_ids) < 400
        with pytest.raises(InvalidRequestError):
            front.submit(prompt, SamplingParams(n=0))
    finally:
        front.stop()
    assert engine.num_cached_blocks == 0


def test_stale_cache_contents_never_leak_into_attention(tiny, decode_path):
    """Unwritten cache memory may hold anything, NaN included; it must not reach the output."""
    engine = LLMEngine(tiny, max_batch_size=8, block_size=4, **decode_path)
    engine.runner.k_cache.fill_(float("nan"))
    engine.runner.v_cache.fill_(float("nan"))
    prompts = random_prompts(4, tiny.config.vocab_size, seed=12)
    params = SamplingParams(temperature=1.0, n=2, seed=3, max_new_tokens=12, ignore_eos=True)
    outputs = engine.generate(prompts, [GREEDY, params, GREEDY, params])
    for prompt, out in zip(prompts[::2], outputs[::2]):
        assert out.completions[0].token_ids == naive_greedy(tiny, prompt, 12)
    for out in outputs[1::2]:
        assert all(len(set(c.token_ids)) > 1 for c in out.completions)

"""Fixed-shape decode steps (engine/graphed_decode.py): padding, buckets, staleness, and
that a step never reads a value on the host, which is what a CUDA graph needs.

On the CPU the steps run eagerly on the same buffers a graph would replay from; the
engine-level equivalence (batched greedy = one sequence alone, joins, aborts, n samples,
logprobs, stale cache memory) runs on this path in tests/test_engine.py. The tests
marked `cuda` record and replay real graphs and run only where a GPU is present.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.engine import LLMEngine
from engine.graphed_decode import bucket_for, bucket_sizes
from engine.loading import load_model
from engine.sampling import SamplingParams
from test_engine import naive_greedy
from tiny_models import make_tiny_model_dir
from trainer.lora import apply_lora

GREEDY = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True)
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20] * 11]


@pytest.fixture
def tiny(tmp_path):
    return load_model(make_tiny_model_dir(tmp_path / "model"))


def fixed_shape_engine(loaded, **options) -> LLMEngine:
    return LLMEngine(loaded, max_batch_size=8, block_size=4, fast_cpu_kernels=False, decode_graphs=True, **options)


def test_buckets_are_powers_of_two_up_to_the_limit():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(8) == [1, 2, 4, 8]
    assert bucket_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
    sizes = bucket_sizes(48)
    assert [bucket_for(n, sizes) for n in (1, 2, 3, 5, 17, 33, 48)] == [1, 2, 4, 8, 32, 48, 48]


def test_padding_rows_write_only_into_the_scratch_block(tiny):
    engine = fixed_shape_engine(tiny)
    runner = engine.runner
    # Memory no block has used yet may hold anything; make it NaN (the scratch block is
    # zeroed when the runner is made).
    runner.k_cache[:, : runner.scratch_block] = float("nan")
    runner.v_cache[:, : runner.scratch_block] = float("nan")
    # Lengths whose second decode step feeds positions 3, 7 and 10: no new block that step.
    for prompt in ([5, 6], [7] * 6, [8] * 9):
        engine.add_request(prompt, GREEDY)
    # A fourth request that ends after the first decode step, leaving its block table in
    # the buffer's fourth row, which is padding from then on.
    engine.add_request([30] * 6, SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True))
    engine.step()  # prefill and the first decode step, 4 rows
    assert len(engine.scheduler.running) == 3
    # The padding row wrote the same k/v into the scratch block last step; mark it afresh.
    runner.k_cache[:, runner.scratch_block] = 7.0
    runner.v_cache[:, runner.scratch_block] = 7.0
    before_k, before_v = runner.k_cache.clone(), runner.v_cache.clone()
    running = engine.scheduler.running
    fed_positions = [seq.num_tokens - 1 for seq in running]  # where this step's tokens go
    engine.step()  # 3 rows run as a bucket of 4: one padding row
    assert (4, 4) in runner.graphed.recorded
    written = set()
    for seq, position in zip(running, fed_positions):
        written.add((seq.block_table[position // 4], position % 4))
    written.add((runner.scratch_block, 0))
    # Compared as bits: blocks never allocated hold whatever the memory held, NaNs included.
    changed = ((runner.k_cache.view(torch.int32) != before_k.view(torch.int32))
               | (runner.v_cache.view(torch.int32) != before_v.view(torch.int32))).any(dim=(0, 3, 4))  # (blocks, slots)
    assert {tuple(index) for index in changed.nonzero().tolist()} == written


def test_each_bucket_is_recorded_once_and_forgotten_when_the_model_changes(tiny):
    engine = fixed_shape_engine(tiny)
    recorded = engine.runner.graphed.recorded
    engine.generate(PROMPTS, GREEDY)
    # 3 rows (bucket 4) feeding positions 3-11 up to 12-20, in 4-token blocks: 3 to 6
    # blocks, buckets 4 and 8. Then one row feeding positions 3-12: 1 to 4 blocks.
    assert set(recorded) == {(4, 4), (4, 8)}
    engine.generate(PROMPTS[:1], GREEDY)
    assert set(recorded) == {(4, 4), (4, 8), (1, 1), (1, 2), (1, 4)}

    # A weight assigned new memory: every recorded step goes, and decoding uses the new weight.
    proj = tiny.model.model.layers[0].mlp.down_proj
    proj.weight.data = proj.weight.data * 2
    out = engine.generate(PROMPTS[:1], GREEDY)[0].completions[0]
    assert set(recorded) == {(1, 1), (1, 2), (1, 4)}
    assert out.token_ids == naive_greedy(tiny, PROMPTS[0], GREEDY.max_new_tokens)

    # New modules (LoRA adapters around the projections) also make them stale.
    apply_lora(tiny.model)
    engine.generate(PROMPTS[1:2], GREEDY)
    assert set(recorded) == {(1, 2), (1, 4)}


class _HostReads(TorchDispatchMode):
    """Counts the operators that read a tensor's value on the host (what `.item()`,
    `int(t)`, `bool(t)` and data-dependent shapes dispatch to). On a GPU each is a
    synchronisation, and inside a CUDA graph capture an error."""

    HOST_READS = {"aten.item.default", "aten._local_scalar_dense.default", "aten.nonzero.default",
                  "aten.masked_select.default",
                  "aten._unique2.default", "aten.unique_consecutive.default", "aten.equal.default"}
    # Indexing with a boolean mask: its result's shape depends on the mask's values.
    INDEXING = {"aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default"}

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in self.HOST_READS:
            self.calls[name] += 1
        elif name in self.INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.calls[name + " (boolean mask)"] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("inference", [False, True])
def test_host_read_detector_sees_item_and_data_dependent_shapes(inference):
    with torch.inference_mode(inference), _HostReads() as reads:
        x = torch.arange(6)
        x[: int(x.max())]
        x[x > 2]
        x[x > 2] = 0
        x[torch.tensor([1, 2])] = 0  # integer indices: fine
    scalar_reads = reads.calls.pop("aten.item.default", 0) + reads.calls.pop("aten._local_scalar_dense.default", 0)
    assert scalar_reads >= 1
    assert reads.calls == {"aten.index.Tensor (boolean mask)": 1, "aten.index_put_.default (boolean mask)": 1}


def test_a_fixed_shape_step_reads_no_value_on_the_host(tiny):
    engine = fixed_shape_engine(tiny)
    engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=3, ignore_eos=True))
    graphed = engine.runner.graphed
    rows, blocks = max(graphed.recorded)
    with torch.inference_mode(), _HostReads() as reads:
        graphed._run(rows, blocks)  # exactly what a graph records
    assert not reads.calls


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@requires_cuda
def test_cuda_graphs_replay_what_eager_steps_compute(tmp_path):
    """bf16 on a GPU: the same requests through recorded graphs and through the same
    fixed-shape steps run eagerly give the same tokens and logprobs."""
    loaded = load_model(make_tiny_model_dir(tmp_path / "model"), device="cuda")
    params = [SamplingParams(temperature=t, n=2, seed=7, max_new_tokens=24, logprobs=True, ignore_eos=True)
              for t in (0.0, 0.8, 1.0)]
    graphs = LLMEngine(loaded, max_batch_size=8, block_size=4)
    eager = LLMEngine(loaded, max_batch_size=8, block_size=4)
    eager.runner.graphed.records_graphs = False
    got = graphs.generate(PROMPTS, params)
    want = eager.generate(PROMPTS, params)
    assert all(isinstance(g, torch.cuda.CUDAGraph) for g in graphs.runner.graphed.recorded.values())
    assert len(graphs.runner.graphed.recorded) >= 3
    for g, w in zip(got, want):
        for gc, wc in zip(g.completions, w.completions):
            assert gc.token_ids == wc.token_ids
            assert gc.logprobs == wc.logprobs
    assert graphs.num_cached_blocks == 0


@requires_cuda
def test_cuda_greedy_matches_one_sequence_alone_in_fp32(tmp_path):
    loaded = load_model(make_tiny_model_dir(tmp_path / "model"), device="cuda", dtype="float32")
    engine = LLMEngine(loaded, max_batch_size=8, block_size=4)
    outputs = engine.generate(PROMPTS, GREEDY)
    for prompt, out in zip(PROMPTS, outputs):
        assert out.completions[0].token_ids == naive_greedy(loaded, prompt, GREEDY.max_new_tokens)

"""Engine throughput benchmark: our engine and HF transformers on the same weights and prompts.

For each concurrency level c, c chat prompts are submitted at once and each decodes
exactly `max_tokens` tokens (greedy, stop tokens ignored so every run does the same
work). Reported per level: decode tokens/s (tokens produced by pure decode steps over
their time), end-to-end tokens/s, mean time to first token, peak RSS and, on a GPU,
peak GPU memory allocated. On a GPU the CUDA graphs a level decodes with are recorded
before it is timed (engine/graphed_decode.py). The same
batches then run through transformers' `generate` (greedy, `min_new_tokens` =
`max_new_tokens`, left padding) for the ratio.

The batch-1 roofline is the measured memory bandwidth over the bytes of weights one
decode step reads (every linear layer and the LM head, at the bits per weight of the
type decoded from; embeddings contribute one row).

transformers is a bench-only dependency (`pip install -e .[bench]`), imported here only.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field

import psutil
import torch

from engine.bundle import LoadedModel
from engine.engine import LLMEngine, decodes_with_graphs
from engine.kernels.quant_types import BITS_PER_WEIGHT
from engine.kernels.quantized_copy import HEAD_QUANT
from engine.sampling import SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Explain how a rainbow forms.",
    "Write a haiku about the sea.",
    "How do I boil an egg?",
    "What is photosynthesis?",
    "Give me three tips for better sleep.",
    "Why is the sky blue?",
    "What does a compiler do?",
    "Summarise the plot of Romeo and Juliet.",
    "How many legs does a spider have?",
    "What is the difference between weather and climate?",
    "Suggest a name for a pet turtle.",
    "How does a bicycle stay upright?",
    "What is a prime number?",
    "Describe a sunset in two sentences.",
    "How do vaccines work?",
]


@dataclass
class LevelResult:
    concurrency: int
    decode_tokens_per_s: float
    e2e_tokens_per_s: float
    mean_ttft_s: float
    wall_s: float
    peak_rss_mb: float
    peak_gpu_mb: float | None = None  # torch.cuda.max_memory_allocated during the level
    hf_e2e_tokens_per_s: float | None = None

    @property
    def ratio_vs_hf(self) -> float | None:
        if not self.hf_e2e_tokens_per_s:
            return None
        return self.e2e_tokens_per_s / self.hf_e2e_tokens_per_s


@dataclass
class BenchReport:
    model: str
    device: str
    dtype: str
    threads: int
    fast_cpu_kernels: bool  # engine/kernels/llama_decode.py and engine/kernels/cpu_linear.py (else PyTorch's own)
    decode_graphs: bool  # decode steps replayed from CUDA graphs (engine/graphed_decode.py)
    quant: str  # the weights decoded from: none, q8_0, q4_0
    max_tokens: int
    weight_bytes_per_token: int
    bandwidth_gb_s: float
    roofline_tokens_per_s: float
    levels: list[LevelResult] = field(default_factory=list)
    load_s: float | None = None  # loading the model from the store
    import_s: float | None = None  # importing the default model into an empty store
    quality: dict | None = None  # a quantized type's cost (chat_tui/benchmarks/quant_quality.py)

    def to_dict(self) -> dict:
        out = asdict(self)
        for level, raw in zip(self.levels, out["levels"]):
            raw["ratio_vs_hf"] = level.ratio_vs_hf
        return out


def chat_prompts(loaded: LoadedModel, count: int) -> list[list[int]]:
    return [
        loaded.encode_chat([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(count)
    ]


def weight_bytes_per_decode_step(model: torch.nn.Module, quant: str = "none") -> int:
    """Bytes of weights a batch-1 decode step reads: all parameters and buffers of linear
    layers and norms, but only one row of the embedding table (a tied LM head is read
    in full as the head); with a quantized type, the linear layers' weights at its bits
    per weight (the LM head's at HEAD_QUANT's)."""
    if quant != "none":
        total = weight_bytes_per_decode_step(model)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                bits = BITS_PER_WEIGHT[HEAD_QUANT if module is getattr(model, "lm_head", None) else quant]
                total -= module.weight.numel() * (module.weight.element_size() - bits / 8)
        return int(total)
    total = 0
    seen: set[int] = set()
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(model, "lm_head", None)
    head_weight = id(head.weight) if head is not None and hasattr(head, "weight") else None
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen or tensor.dtype in (torch.long, torch.bool):
            continue
        seen.add(id(tensor))
        if id(tensor) in embeddings and id(tensor) != head_weight:
            total += tensor.shape[-1] * tensor.element_size()
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def measure_bandwidth_gb_s(size_mb: int = 1024, repeats: int = 5) -> float:
    """Best read bandwidth over a tensor much larger than the caches (a sum reads it once)."""
    x = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - start) / 1e9)
    del x
    gc.collect()
    return best


def run_engine_level(
    loaded: LoadedModel, concurrency: int, max_tokens: int, fast_cpu_kernels: bool = True,
    decode_graphs: bool | None = None, quant: str = "none",
) -> LevelResult:
    engine = LLMEngine(
        loaded, max_batch_size=max(concurrency, 1), max_cached_tokens=concurrency * (max_tokens + 128),
        fast_cpu_kernels=fast_cpu_kernels, decode_graphs=decode_graphs, quant=quant,
    )
    params = SamplingParams(temperature=0, max_new_tokens=max_tokens, ignore_eos=True)
    prompts = chat_prompts(loaded, concurrency)
    # Builds the CPU kernels (once per process) and the quantized copy, or records the
    # level's CUDA graphs.
    engine.warm_up(concurrency, max(len(p) for p in prompts) + max_tokens)
    # A short run at the level's own batch size, so first-call set-up is not timed.
    engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True))
    on_gpu = engine.runner.device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(engine.runner.device)
    process = psutil.Process()
    peak_rss = process.memory_info().rss
    ids = [engine.add_request(p, params) for p in prompts]
    start = time.perf_counter()
    decode_tokens, decode_time = 0, 0.0
    while engine.has_unfinished():
        admitting = bool(engine.scheduler.waiting)
        step_start = time.perf_counter()
        events = engine.step()
        if not admitting:
            decode_time += time.perf_counter() - step_start
            decode_tokens += sum(1 for e in events if e.token_id is not None)
        peak_rss = max(peak_rss, process.memory_info().rss)
    wall = time.perf_counter() - start
    outputs = [engine.pop_output(rid) for rid in ids]
    total = sum(o.num_generated_tokens for o in outputs)
    return LevelResult(
        concurrency=concurrency,
        decode_tokens_per_s=decode_tokens / decode_time if decode_time else 0.0,
        e2e_tokens_per_s=total / wall,
        mean_ttft_s=statistics.mean(o.ttft_s for o in outputs),
        wall_s=wall,
        peak_rss_mb=peak_rss / 2**20,
        peak_gpu_mb=torch.cuda.max_memory_allocated(engine.runner.device) / 2**20 if on_gpu else None,
    )


def run_hf_level(model_dir: str, loaded: LoadedModel, concurrency: int, max_tokens: int) -> float:
    """transformers' generate on the same prompts; returns its tokens/s.

    The HF model is loaded here and dropped on return, so the engine's next level does
    not count its memory in the engine's peak RSS."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    dtype = next(loaded.model.parameters()).dtype
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    hf_model.to(next(loaded.model.parameters()).device)
    prompts = chat_prompts(loaded, concurrency)
    width = max(len(p) for p in prompts)
    pad = loaded.tokenizer.pad_token_id or 0
    device = next(hf_model.parameters()).device
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    kwargs = dict(do_sample=False, max_new_tokens=max_tokens, min_new_tokens=max_tokens, pad_token_id=pad)
    with torch.inference_mode():
        hf_model.generate(input_ids=input_ids[:1], attention_mask=mask[:1], do_sample=False, max_new_tokens=4,
                          pad_token_id=pad)  # warm-up
        start = time.perf_counter()
        out = hf_model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        wall = time.perf_counter() - start
    generated = (out.shape[1] - width) * concurrency
    del hf_model, out
    gc.collect()
    return generated / wall


def run_benchmark(
    loaded: LoadedModel, concurrency_levels: list[int], max_tokens: int, compare_hf: bool, log=print,
    fast_cpu_kernels: bool = True, decode_graphs: bool | None = None, quant: str = "none",
) -> BenchReport:
    """decode_graphs: None for the engine's default (CUDA graphs on a GPU). quant: the
    weights to decode from (engine/kernels/quantized_copy.py)."""
    param = next(loaded.model.parameters())
    bytes_per_token = weight_bytes_per_decode_step(loaded.model, quant)
    bandwidth = measure_bandwidth_gb_s() if param.device.type == "cpu" else _gpu_bandwidth_gb_s(param.device)
    report = BenchReport(
        model=loaded.name,
        device=str(param.device),
        dtype=str(param.dtype).removeprefix("torch."),
        threads=torch.get_num_threads(),
        fast_cpu_kernels=fast_cpu_kernels,
        decode_graphs=decodes_with_graphs(param.device, decode_graphs),
        quant=quant,
        max_tokens=max_tokens,
        weight_bytes_per_token=bytes_per_token,
        bandwidth_gb_s=bandwidth,
        roofline_tokens_per_s=bandwidth * 1e9 / bytes_per_token,
    )
    log(
        f"roofline (batch 1): {bytes_per_token / 1e6:.0f} MB of weights per token at {bandwidth:.1f} GB/s "
        f"-> {report.roofline_tokens_per_s:.1f} tokens/s"
    )
    for c in concurrency_levels:
        level = run_engine_level(loaded, c, max_tokens, fast_cpu_kernels, decode_graphs, quant)
        if compare_hf:
            level.hf_e2e_tokens_per_s = run_hf_level(str(loaded.path), loaded, c, max_tokens)
        report.levels.append(level)
        log(format_level(level, report))
    return report


def format_level(level: LevelResult, report: BenchReport) -> str:
    text = (
        f"concurrency {level.concurrency:>3}: decode {level.decode_tokens_per_s:8.1f} tok/s, "
        f"end-to-end {level.e2e_tokens_per_s:8.1f} tok/s, TTFT {level.mean_ttft_s * 1000:7.1f} ms, "
        f"peak RSS {level.peak_rss_mb:7.0f} MB"
    )
    if level.peak_gpu_mb is not None:
        text += f", peak GPU {level.peak_gpu_mb:6.0f} MB"
    if level.concurrency == 1:
        text += f", {100 * level.decode_tokens_per_s / report.roofline_tokens_per_s:.0f}% of roofline"
    if level.hf_e2e_tokens_per_s:
        text += f" | HF generate {level.hf_e2e_tokens_per_s:7.1f} tok/s -> {level.ratio_vs_hf:.2f}x"
    return text


def _gpu_bandwidth_gb_s(device: torch.device) -> float:
    x = torch.ones(512 * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    torch.cuda.synchronize(device)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        y.copy_(x)
        torch.cuda.synchronize(device)
        best = max(best, 2 * x.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return best

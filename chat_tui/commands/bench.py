"""`chat-tui bench`: engine throughput per concurrency level, against HF transformers.

Prints decode tokens/s, time to first token and peak memory for each concurrency level,
the same workload through transformers' `generate` (a bench-only dependency) as a
ratio, and the machine's batch-1 roofline. With --quant, the engine decodes from
quantized weights and the quality they cost is printed beside the speed
(chat_tui/benchmarks/quant_quality.py). The measuring code is in
chat_tui/benchmarks/engine_bench.py.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict

import click

from chat_tui.quant_choice import QUANT_TYPES, check_quant_device


def _time_default_import() -> float:
    """Seconds to import the default model's GGUF into an empty, throw-away store."""
    from engine.loading import ensure_default_model

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        ensure_default_model(scratch)
        return time.perf_counter() - started


def _levels(text: str) -> list[int]:
    """The concurrency levels, each checked against the engine's batch limit before any
    engine is sized from it."""
    from engine.sampling import MAX_BATCH_SIZE

    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint="--concurrency") from None
    if not levels or any(not 1 <= level <= MAX_BATCH_SIZE for level in levels):
        raise click.BadParameter(f"{text!r}: concurrency levels must be integers from 1 to {MAX_BATCH_SIZE}",
                                 param_hint="--concurrency")
    return levels


@click.command()
@click.option("--model", "model_name", default=None, help="Model name, directory or .gguf (default: the default model).")
@click.option("--concurrency", default="1,8,32", show_default=True, help="Comma-separated numbers of concurrent requests.")
@click.option("--max-tokens", type=int, default=128, show_default=True, help="New tokens per request.")
@click.option("--device", default="cpu", show_default=True, help="cpu, auto (the GPU if any), cuda, cuda:N or mps.")
@click.option("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default).")
@click.option("--quant", type=click.Choice(QUANT_TYPES), default="none", show_default=True,
              help="Decode from 8-bit (q8_0) or 4-bit (q4_0) block-quantized weights (CPU), and report their "
                   "quality cost beside the speed; none: the weights as they are.")
@click.option("--plain-torch", is_flag=True,
              help="CPU fp32: PyTorch's own kernels instead of the engine's C++ and oneDNN ones (for comparison).")
@click.option("--no-graphs", is_flag=True, help="GPU: decode step by step instead of replaying CUDA graphs (for comparison).")
@click.option("--no-hf", is_flag=True, help="Skip the HF transformers comparison.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def bench(
    model_name: str | None,
    concurrency: str,
    max_tokens: int,
    device: str,
    dtype: str | None,
    quant: str,
    plain_torch: bool,
    no_graphs: bool,
    no_hf: bool,
    as_json: bool,
) -> None:
    """Measure decode throughput of the engine (and of HF transformers on the same weights)."""
    from chat_tui.benchmarks.engine_bench import run_benchmark
    from chat_tui.errors import UserError
    from chat_tui.paths import models_dir
    from engine.loading import load_model

    levels = _levels(concurrency)
    if max_tokens < 1:
        raise click.BadParameter(f"must be at least 1, got {max_tokens}", param_hint="--max-tokens")
    check_quant_device(quant, device)
    compare_hf = not no_hf and quant == "none"
    if compare_hf:
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise UserError("the HF comparison needs transformers: pip install -e '.[bench]' (or pass --no-hf)") from None
    import_s = None
    if model_name in (None, "default"):
        import_s = _time_default_import()
    started = time.perf_counter()
    loaded = load_model(model_name, device=device, dtype=dtype, store_root=models_dir())
    load_s = time.perf_counter() - started
    context = loaded.config.max_position_embeddings
    if max_tokens >= context:  # the engine's cache is sized from it
        raise UserError(f"--max-tokens {max_tokens} does not fit the model's context of {context} tokens")
    log = (lambda _msg: None) if as_json else click.echo
    if import_s is not None:
        log(f"import of the default model into a fresh store: {import_s:.1f} s")
    log(f"load of {loaded.name} from the store: {load_s:.2f} s")
    report = run_benchmark(loaded, levels, max_tokens, compare_hf, log=log, fast_cpu_kernels=not plain_torch,
                           decode_graphs=False if no_graphs else None, quant=quant)
    report.load_s, report.import_s = load_s, import_s
    if quant != "none":
        from chat_tui.benchmarks.quant_quality import measure_quality

        quality = measure_quality(loaded, [quant])[0]
        report.quality = asdict(quality)
        log(f"quality of {quality.line()}")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))

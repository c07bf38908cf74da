"""Benchmark: the engine against llama.cpp on the same GGUF files, in one run, alternating.

    python bench/llama_cpp.py [--model NAME] [--types f32,q8_0,q4_0] [--rounds 3]
                              [--tokens 128] [--sequences 8,32] [--agreement-only] [--json FILE]

Exports the model (default: the default SmolLM2 model) as GGUF once per type
(engine/export/gguf.py), then for each round and type measures, back to back:

- batch 1: the engine's decode tokens/s on that file (loaded through its GGUF loader and
  decoded from the file's own blocks for q8_0/q4_0) and `llama-bench` (tg, no prompt)'s;
- batched (--sequences): the engine's continuous batching with N chat prompts at once
  against `llama-batched-bench` with N sequences of the same prompt length (S_TG).

The memory speed of a shared VM drifts by a third between minutes, so each ratio is taken
between two measurements made next to each other, per round; the median over rounds is
printed beside every round's ratio. Threads: torch's count, on both sides. The quality
each quantized type costs (KL to fp32, top-1 agreement, perplexity on the fluency text:
chat_tui/benchmarks/quant_quality.py) is printed beside its speed.

Then the agreement check: greedy generation of the first 32 tokens of a chat prompt by
`llama-simple` and by the engine on the F32 and Q8_0 files, and how many leading tokens
agree. --agreement-only runs just that (tests/test_llama_cpp_agreement.py runs it
where llama.cpp is already built).

llama.cpp is built once and cached (bench/llama_cpp_build.py, 20+ minutes the first time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__:  # imported as bench.llama_cpp (the tests)
    from bench.llama_cpp_build import ensure_built
else:  # run as python bench/llama_cpp.py
    from llama_cpp_build import ensure_built

# The engine's weight type for each GGUF file type measured.
ENGINE_QUANT = {"f32": "none", "q8_0": "q8_0", "q4_0": "q4_0"}
AGREEMENT_TYPES = ("f32", "q8_0")
AGREEMENT_TOKENS = 32
AGREEMENT_QUESTION = "Explain how a rainbow forms."  # a reply longer than 32 tokens


@dataclass
class Pair:
    """One measurement of each side, taken next to each other."""

    ours: float
    theirs: float

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs if self.theirs else float("nan")


@dataclass
class Row:
    file_type: str
    sequences: int
    pairs: list[Pair] = field(default_factory=list)

    def median_ratio(self) -> float:
        return statistics.median(p.ratio for p in self.pairs)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def llama_bench(program: Path, model: Path, tokens: int, threads: int) -> float:
    """llama-bench's decode tokens/s for one sequence (tg: no prompt, `tokens` new)."""
    out = subprocess.run([str(program), "-m", str(model), "-p", "0", "-n", str(tokens), "-t", str(threads), "-r", "2",
                          "-o", "json"], capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def llama_batched_bench(program: Path, model: Path, sequences: int, prompt: int, tokens: int, threads: int) -> float:
    """llama-batched-bench's decode tokens/s (S_TG) for `sequences` sequences of `prompt`
    prompt tokens each."""
    context = sequences * (prompt + tokens) + 64
    out = subprocess.run([str(program), "-m", str(model), "-c", str(context), "-npp", str(prompt), "-ntg", str(tokens),
                          "-npl", str(sequences), "-t", str(threads), "--output-format", "jsonl"],
                         capture_output=True, text=True, check=True)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("{")]
    return float(json.loads(lines[-1])["speed_tg"])


def llama_simple(program: Path, model: Path, prompt: str, tokens: int) -> str:
    """llama-simple's greedy continuation of `prompt` (special tokens parsed), as text."""
    out = subprocess.run([str(program), "-m", str(model), "-n", str(tokens + 1), prompt],
                         capture_output=True, text=True, check=True).stdout
    start = out.find(prompt)
    if start < 0:
        raise RuntimeError(f"llama-simple's output does not start with the prompt: {out[:200]!r}")
    return out[start + len(prompt):].removesuffix("\n")


def agreeing_tokens(tokenizer, ours: list[int], their_text: str) -> int:
    """How many of our leading tokens spell the beginning of llama.cpp's text."""
    count = 0
    for k in range(1, len(ours) + 1):
        if not their_text.startswith(tokenizer.decode(ours[:k])):
            break
        count = k
    return count


def agreement(files: dict[str, Path], program: Path, log=print) -> dict[str, tuple[int, int]]:
    """(agreeing, generated) greedy tokens of the engine and llama-simple on each file
    (by GGUF type; the engine decodes a q8_0 or q4_0 file from its own blocks)."""
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.sampling import SamplingParams

    results = {}
    for file_type, path in files.items():
        loaded = load_model(path)
        prompt = loaded.chat_template.render([{"role": "user", "content": AGREEMENT_QUESTION}], add_generation_prompt=True)
        ids = loaded.tokenizer.encode(prompt, add_special_tokens=False)
        params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=AGREEMENT_TOKENS)
        engine = LLMEngine(loaded, max_batch_size=1, quant=ENGINE_QUANT.get(file_type, "none"))
        ours = engine.generate([ids], params)[0].completions[0].token_ids
        ours = [t for t in ours if t not in loaded.stop_token_ids]
        theirs = llama_simple(program, path, prompt, AGREEMENT_TOKENS)
        results[file_type] = (agreeing_tokens(loaded.tokenizer, ours, theirs), len(ours))
        log(f"agreement {file_type}: first {results[file_type][0]} of {len(ours)} greedy tokens agree\n"
            f"  ours:      {loaded.tokenizer.decode(ours)!r}\n  llama.cpp: {theirs!r}")
    return results


def export_files(model: str | None, types: list[str], folder: Path, log=print) -> tuple[Path, dict[str, Path]]:
    """The model's directory and a GGUF file of it per type."""
    from chat_tui.paths import models_dir
    from engine.export.gguf import export_gguf
    from engine.loading import ModelStore, ensure_default_model

    store = ModelStore(models_dir())
    source = ensure_default_model(store.root) if model is None else store.resolve(model)
    files = {}
    for file_type in types:
        files[file_type] = export_gguf(source, folder / f"{source.name}.{file_type}.gguf", file_type)
        log(f"exported {file_type}: {files[file_type].stat().st_size / 1e6:.0f} MB")
    return source, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Store name or model directory (default: the default model).")
    parser.add_argument("--types", default="f32,q8_0,q4_0", help="GGUF types to compare (f32, q8_0, q4_0).")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of measurements.")
    parser.add_argument("--tokens", type=int, default=128, help="New tokens per sequence.")
    parser.add_argument("--sequences", default="8,32", help="Batched decode sizes ('' for none).")
    parser.add_argument("--agreement-only", action="store_true", help="Only the greedy agreement check.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results to this file.")
    args = parser.parse_args()
    types = [t for t in args.types.split(",") if t]
    if unknown := [t for t in types if t not in ENGINE_QUANT]:
        parser.error(f"unknown type {unknown[0]!r} (choose from {', '.join(ENGINE_QUANT)})")
    sequences = [int(s) for s in args.sequences.split(",") if s]

    import torch

    from chat_tui.benchmarks.engine_bench import chat_prompts, run_engine_level
    from chat_tui.benchmarks.quant_quality import measure_quality
    from engine.loading import load_model

    programs = ensure_built()
    threads = torch.get_num_threads()
    results: dict = {"threads": threads, "load_average_before": load_average()}
    with tempfile.TemporaryDirectory(prefix="llama-cpp-bench-") as scratch:
        source, files = export_files(args.model, types if not args.agreement_only else list(AGREEMENT_TYPES),
                                     Path(scratch))
        results["agreement"] = agreement({t: files[t] for t in AGREEMENT_TYPES if t in files}, programs["llama-simple"])
        if args.agreement_only:
            return
        loaded = {t: load_model(files[t]) for t in types}
        prompt_tokens = round(statistics.mean(len(p) for p in chat_prompts(loaded[types[0]], max(sequences or [1]))))
        rows = {(t, n): Row(t, n) for t in types for n in [1, *sequences]}
        for round_number in range(args.rounds):
            print(f"round {round_number + 1} of {args.rounds} (load average {load_average()})", flush=True)
            for t in types:
                for n in [1, *sequences]:
                    ours = run_engine_level(loaded[t], n, args.tokens, quant=ENGINE_QUANT[t]).decode_tokens_per_s
                    if n == 1:
                        theirs = llama_bench(programs["llama-bench"], files[t], args.tokens, threads)
                    else:
                        theirs = llama_batched_bench(programs["llama-batched-bench"], files[t], n, prompt_tokens,
                                                     args.tokens, threads)
                    rows[t, n].pairs.append(Pair(ours, theirs))
                    print(f"  {t:>5} x{n:<3} chat-tui {ours:7.1f} tok/s, llama.cpp {theirs:7.1f} tok/s -> "
                          f"{ours / theirs:.2f}x", flush=True)
        quality = {q.quant: q for q in measure_quality(load_model(source), [ENGINE_QUANT[t] for t in types if t != "f32"])}
        results["load_average_after"] = load_average()
        print(f"\nmedian over {args.rounds} rounds; {threads} threads; load average before {results['load_average_before']},"
              f" after {results['load_average_after']}")
        for (t, n), row in rows.items():
            cost = quality.get(ENGINE_QUANT[t])
            ours = statistics.median(p.ours for p in row.pairs)
            theirs = statistics.median(p.theirs for p in row.pairs)
            ratios = ", ".join(f"{p.ratio:.2f}" for p in row.pairs)
            print(f"{t:>5} x{n:<3} chat-tui {ours:7.1f}  llama.cpp {theirs:7.1f}  ratio {row.median_ratio():.2f} "
                  f"({ratios})" + (f" | {cost.line()}" if cost and n == 1 else ""))
        results["rows"] = [asdict(row) | {"median_ratio": row.median_ratio()} for row in rows.values()]
        results["quality"] = {q: asdict(v) for q, v in quality.items()}
        results["prompt_tokens"] = prompt_tokens
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")

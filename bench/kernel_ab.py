"""The C++ decode step of the working tree against another revision's, in one process.

This project's VM shares its host and its memory speed drifts by a third between
minutes, so two builds timed in separate runs cannot be told apart by a few percent.
Here both builds are loaded at once and called in turn on the same state (the same rows,
cached tokens and fed tokens), and the medians of their times are compared. It also
prints the largest difference between their logits (0 when a change keeps the bits).

    python bench/kernel_ab.py --base HEAD~1 --rows 1,8 --context 150

Only the C++ sources (engine/kernels/*.cpp, *.h) come from the base revision; the model,
the cache and the call into the kernel are the working tree's, so the two versions must
share the kernel's signature and cache layout.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def kernel_of(source_dir: Path, argtypes: list) -> ctypes._CFuncPtr:
    from engine.kernels import native_library

    return native_library.bind(ctypes.CDLL(str(native_library.build("g++", source_dir))), "llama_decode", argtypes)


def sources_at(revision: str, into: Path) -> Path:
    """The C++ kernel sources at a git revision, written under `into`. Revisions before
    the kernels moved to engine/kernels/ kept them in engine/ itself."""
    from engine.kernels import native_library

    for path in native_library.SOURCES + native_library.HEADERS:
        for folder in ("engine/kernels", "engine"):
            shown = subprocess.run(["git", "show", f"{revision}:{folder}/{path.name}"], cwd=ROOT,
                                   capture_output=True, text=True)
            if shown.returncode == 0:
                break
        else:
            raise SystemExit(f"{path.name} is not in {revision}: {shown.stderr.strip()}")
        (into / path.name).write_text(shown.stdout)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare the working tree with")
    parser.add_argument("--rows", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--context", type=int, default=150, help="about how many tokens each row has cached")
    parser.add_argument("--calls", type=int, default=40, help="calls of each build per batch size")
    parser.add_argument("--quant", default="none", help="weights to decode from: none, q8_0 or q4_0")
    args = parser.parse_args()

    from chat_tui.benchmarks.engine_bench import chat_prompts
    from chat_tui.paths import models_dir
    from engine.engine import LLMEngine
    from engine.kernels import llama_decode
    from engine.kernels.quantized_copy import quantized_copy
    from engine.loading import load_model
    from engine.sampling import SamplingParams

    loaded = load_model(None, device="cpu", dtype=None, store_root=models_dir())
    if not llama_decode.available():
        raise SystemExit("the C++ decode step is not available here")
    argtypes = llama_decode._function.result.argtypes
    with tempfile.TemporaryDirectory() as scratch:
        builds = {"base": kernel_of(sources_at(args.base, Path(scratch)), argtypes),
                  "work": kernel_of(ROOT / "engine" / "kernels", argtypes)}
        addresses = llama_decode.weight_table(loaded.model, quantized_copy(loaded, args.quant))
        print(f"working tree against {args.base}: median ms per decode step ({args.quant} weights), "
              f"{args.calls} calls each, alternating")
        for rows in (int(r) for r in args.rows.split(",")):
            engine = LLMEngine(loaded, max_batch_size=max(rows, 8), max_cached_tokens=max(rows, 8) * 2048)
            prompts = chat_prompts(loaded, rows)
            for prompt in prompts:
                engine.add_request(prompt, SamplingParams(temperature=0, max_new_tokens=4 * args.context, ignore_eos=True))
            for _ in range(max(1, args.context - min(len(p) for p in prompts))):
                engine.step()
            runner, batch = engine.runner, torch.arange(rows)
            positions, tokens = runner.context_lens[batch].clone(), torch.zeros(rows, dtype=torch.long)

            def call(function) -> torch.Tensor:
                with torch.inference_mode():
                    return llama_decode._call(function, loaded.model, addresses, tokens, positions,
                                              runner.block_tables[batch], runner.k_cache, runner.v_cache)

            difference = (call(builds["base"]) - call(builds["work"])).abs().max().item()
            times: dict[str, list[float]] = {name: [] for name in builds}
            for _ in range(args.calls):
                for name, function in builds.items():
                    start = time.perf_counter()
                    call(function)
                    times[name].append(time.perf_counter() - start)
            base, work = (statistics.median(times[name]) * 1e3 for name in ("base", "work"))
            print(f"{rows:3d} rows, ~{int(positions.float().mean())} tokens cached: base {base:.2f} ms, "
                  f"working tree {work:.2f} ms, {base / work:.3f}x faster; largest logit difference {difference:.2g}")


if __name__ == "__main__":
    main()

"""The sampler of the working tree against another revision's, in one process, inside
the engine on the default model.

This project's VM shares its host and its speed drifts between minutes, so the two
samplers take turns: each workload runs through `LLMEngine.generate` once with the base
revision's engine/sampling_ops.py and once with the working tree's, for several rounds.
Printed per workload: the median time of one sampling call (all rows of a decode step),
the end-to-end decode tokens/s, and how many requests drew the same tokens with both (the
draw is defined the same way in both, so a difference means a change of behaviour, or a
uniform within rounding of a token's boundary).

    python bench/sampler_ab.py --base HEAD~1 --rounds 3

Workloads: the chat's settings (temperature 0.7, top-p 0.9, repetition penalty 1.1) for
one reply and for 8 alternatives of one prompt, and PPO's rollouts (temperature 0.7, the
whole vocabulary, logprobs) of 4 prompts x 8 samples.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHAT = dict(temperature=0.7, top_p=0.9, repetition_penalty=1.1)
ROLLOUT = dict(temperature=0.7, top_p=1.0, repetition_penalty=1.0, logprobs=True)
WORKLOADS = {  # name: (prompts, samples per prompt, sampling settings)
    "chat, 1 reply": (1, 1, CHAT),
    "chat, 8 alternatives": (1, 8, CHAT),
    "rollouts, 4 prompts x 8": (4, 8, ROLLOUT),
}


def sampler_at(revision: str, into: Path):
    """engine/sampling_ops.py as it was at `revision`, loaded as its own module."""
    text = subprocess.run(["git", "show", f"{revision}:engine/sampling_ops.py"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    path = into / "base_sampling_ops.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("base_sampling_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each sampler per workload")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per sample")
    args = parser.parse_args()

    import engine.runner
    from chat_tui.benchmarks.engine_bench import chat_prompts
    from chat_tui.paths import models_dir
    from engine import sampling_ops
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.sampling import SamplingParams

    with tempfile.TemporaryDirectory() as scratch:
        samplers = {args.base: sampler_at(args.base, Path(scratch)), "working tree": sampling_ops}
    loaded = load_model(None, store_root=models_dir())
    llm = LLMEngine(loaded, max_batch_size=32)
    llm.warm_up()
    call_times: list[float] = []
    sample = llm.runner.sample

    def timed_sample(*call_args, **kwargs):
        started = time.perf_counter()
        result = sample(*call_args, **kwargs)
        call_times.append(time.perf_counter() - started)
        return result

    llm.runner.sample = timed_sample
    print(f"default model, {args.max_tokens} new tokens per sample, {args.rounds} rounds; medians")
    for name, (num_prompts, n, settings) in WORKLOADS.items():
        prompts = chat_prompts(loaded, num_prompts)
        per_call = {label: [] for label in samplers}
        tokens_per_s = {label: [] for label in samplers}
        drawn = {}
        for _ in range(args.rounds):
            for label, module in samplers.items():
                engine.runner.sample_next_tokens = module.sample_next_tokens
                call_times.clear()
                params = [SamplingParams(max_new_tokens=args.max_tokens, n=n, seed=7 + i, ignore_eos=True, **settings)
                          for i in range(num_prompts)]
                started = time.perf_counter()
                outputs = llm.generate(prompts, params)
                elapsed = time.perf_counter() - started
                per_call[label].append(statistics.median(call_times[2:]))
                tokens_per_s[label].append(num_prompts * n * args.max_tokens / elapsed)
                drawn[label] = [c.token_ids for output in outputs for c in output.completions]
        engine.runner.sample_next_tokens = sampling_ops.sample_next_tokens
        base, tree = (statistics.median(per_call[label]) * 1e3 for label in samplers)
        base_rate, tree_rate = (statistics.median(tokens_per_s[label]) for label in samplers)
        same = sum(a == b for a, b in zip(*drawn.values()))
        print(f"{name:>26}: sampling {base:5.2f} -> {tree:5.2f} ms a step ({base / tree:.1f}x); "
              f"{base_rate:6.1f} -> {tree_rate:6.1f} tok/s ({tree_rate / base_rate:.2f}x); "
              f"same tokens in {same} of {len(drawn[args.base])} samples")


if __name__ == "__main__":
    main()

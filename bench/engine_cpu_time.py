"""Engine vs HF transformers `generate` in single-thread CPU time, on the default model.

Wall-clock rates on a shared machine mostly measure the other jobs; the CPU time one
thread spends per generated token does not. Both sides decode the same chat prompts
greedily for the same number of tokens (stop tokens ignored).

    python bench/engine_cpu_time.py --batch 1 --tokens 32
    python bench/engine_cpu_time.py --batch 8 --tokens 32

Needs transformers (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="concurrent requests")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--model", default=None, help="model name or path (default: the default model)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import transformers

    from chat_tui.benchmarks.engine_bench import chat_prompts
    from chat_tui.paths import models_dir
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.sampling import SamplingParams

    loaded = load_model(args.model, store_root=models_dir())
    prompts = chat_prompts(loaded, args.batch)
    params = SamplingParams(temperature=0, max_new_tokens=args.tokens, ignore_eos=True)
    engine = LLMEngine(loaded, max_batch_size=args.batch, max_cached_tokens=args.batch * (args.tokens + 128))
    engine.generate(prompts[:1], SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True))  # warm-up
    start = time.process_time()
    engine.generate(prompts, params)
    ours = time.process_time() - start

    transformers.utils.logging.disable_progress_bar()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(loaded.path), dtype=torch.float32).eval()
    width = max(len(p) for p in prompts)
    pad = loaded.tokenizer.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        hf.generate(input_ids=ids[:1], attention_mask=mask[:1], do_sample=False, max_new_tokens=2, pad_token_id=pad)
        start = time.process_time()
        hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens, pad_token_id=pad)
        theirs = time.process_time() - start
    total = args.batch * args.tokens
    print(f"batch {args.batch}, {args.tokens} tokens each: engine {total / ours:.1f} tokens per CPU-second, "
          f"HF generate {total / theirs:.1f} -> {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()

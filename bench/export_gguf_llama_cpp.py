"""Benchmark: export a model to GGUF and compare llama.cpp's greedy output with ours.

    python bench/export_gguf_llama_cpp.py [--model NAME] [--type f16] [--tokens 16]

Exports the model (default: the default SmolLM2 model) with engine.export.gguf, then
generates greedily from the same chat prompt with our engine (on the source directory)
and, where bench/llama_cpp_build.py has built llama.cpp, with `llama-simple` on the
exported file (bench/llama_cpp.py's agreement check), and prints both and how many
leading tokens agree. Also reports the export time, the file size, and the largest logit
difference after loading the file back through our own GGUF loader.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Store name or model directory (default: the default model).")
    parser.add_argument("--type", default="f16", choices=["f16", "q8_0", "q4_0", "f32"])
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    if "CHAT_TUI_HOME" not in os.environ:
        os.environ["CHAT_TUI_HOME"] = tempfile.mkdtemp(prefix="bench-export-")

    import torch

    from chat_tui.paths import models_dir
    from engine.engine import LLMEngine
    from engine.export.gguf import export_gguf
    from engine.loading import ModelStore, ensure_default_model, load_model
    from engine.sampling import SamplingParams

    store = ModelStore(models_dir())
    source = ensure_default_model(store.root) if args.model is None else store.resolve(args.model)
    out = Path(tempfile.mkdtemp(prefix="gguf-")) / f"{source.name}.{args.type}.gguf"
    started = time.perf_counter()
    export_gguf(source, out, args.type)
    print(f"exported {source.name} as {args.type}: {out.stat().st_size / 1e6:.1f} MB in "
          f"{time.perf_counter() - started:.1f}s -> {out}")

    ours = load_model(source)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = ours.encode_chat(messages)
    back = load_model(out)
    with torch.no_grad():
        want = ours.model(torch.tensor([prompt]))[0].float()
        got = back.model(torch.tensor([prompt]))[0].float()
    difference = (want - got).abs()
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="batchmean")
    agree = float((want.argmax(-1) == got.argmax(-1)).float().mean())
    print(f"source vs exported file through our GGUF loader, {len(prompt)} prompt positions: "
          f"max |logit diff| {float(difference.max()):.4f}, mean {float(difference.mean()):.5f}, "
          f"logit range {float(want.min()):.1f}..{float(want.max()):.1f}, KL {float(kl):.2e} nats, "
          f"top-1 agreement {agree:.0%}")

    params = SamplingParams(temperature=0, max_new_tokens=args.tokens, ignore_eos=True)
    our_ids = LLMEngine(ours).generate([prompt], params)[0].completions[0].token_ids
    print(f"ours:      {ours.tokenizer.decode(our_ids)!r}")

    import llama_cpp
    from llama_cpp_build import built_programs

    programs = built_programs()
    if programs is None:
        print("llama.cpp is not built; `python bench/llama_cpp_build.py` builds it (20+ minutes)")
        return
    llama_cpp.agreement({args.type: out}, programs["llama-simple"])


if __name__ == "__main__":
    main()

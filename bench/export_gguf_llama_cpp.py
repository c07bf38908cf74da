"""Benchmark: export a model to GGUF and compare llama.cpp's greedy output with ours.

    python bench/export_gguf_llama_cpp.py [--model NAME] [--type f16] [--tokens 16]

Exports the model (default: the default SmolLM2 model) with engine.export.gguf, then
generates greedily from the same chat prompt with our engine (on the source directory)
and with llama.cpp through llama-cpp-python (on the exported file), and prints both and
how many leading tokens agree. Also reports the export time, the file size, and the
largest logit difference after loading the file back through our own GGUF loader.

llama-cpp-python is optional and not a project dependency (it compiles C++; PyPI has no
prebuilt wheel for this platform). Without it, only our side runs.
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
    parser.add_argument("--type", default="f16", choices=["f16", "q8_0", "f32"])
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

    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed; skipping the llama.cpp comparison")
        return
    llm = Llama(model_path=str(out), n_ctx=512, verbose=False, logits_all=False)
    their_ids: list[int] = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0):
        their_ids.append(int(token))
        if len(their_ids) == args.tokens:
            break
    print(f"llama.cpp: {ours.tokenizer.decode(their_ids)!r}")
    agree = next((i for i, (a, b) in enumerate(zip(our_ids, their_ids)) if a != b), min(len(our_ids), len(their_ids)))
    print(f"first {agree} of {args.tokens} greedy tokens agree")


if __name__ == "__main__":
    main()

"""Base rates of candidate preferences on a model: how the benchmark's preference was
chosen (one reply per prompt, the chat's default sampling, a seeded sample of prompts)."""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import torch

from bench.loop import measures
from bench.loop.preference import candidate_checks, count_words
from bench.loop.prompt_set import load_prompts


def measure_candidates(model: str | None, num_prompts: int, seed: int, threads: int | None = None,
                       max_new_tokens: int | None = None) -> dict[str, Any]:
    from chat_tui.paths import models_dir
    from chat_tui.services.chat_settings import ChatSettings
    from engine.engine import LLMEngine
    from engine.loading import ensure_default_model, load_model

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model if model is not None else ensure_default_model(models_dir()))
    prompts = load_prompts()
    random.Random(seed).shuffle(prompts)
    prompts = prompts[:num_prompts]
    settings = ChatSettings()
    if max_new_tokens:
        settings = dataclasses.replace(settings, max_new_tokens=max_new_tokens)
    base = settings.validate().sampling_params(n=1)
    engine = LLMEngine(loaded, max_batch_size=max(1, min(32, len(prompts))))
    started = time.perf_counter()
    outputs = engine.generate(
        [loaded.encode_chat([{"role": "user", "content": p.text}]) for p in prompts],
        [dataclasses.replace(base, seed=seed * 100_003 + i) for i in range(len(prompts))],
    )
    seconds = time.perf_counter() - started
    texts = [o.completions[0].text for o in outputs]
    rates = {name: measures.rate([check(t) for t in texts]) for name, check in candidate_checks().items()}
    return {
        "model": str(loaded.path), "seconds": seconds, "rates": {k: str(v) for k, v in rates.items()},
        "rate_values": {k: v.as_dict() for k, v in rates.items()},
        "replies": [{"id": p.id, "prompt": p.text, "text": t, "words": count_words(t),
                     "finish_reason": o.completions[0].finish_reason}
                    for p, t, o in zip(prompts, texts, outputs)],
    }

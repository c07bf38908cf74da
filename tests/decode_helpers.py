"""What the C++ decode step's tests share (beside conftest's tiny_llama and tiny_qwen2):
a way to see every step that goes through the kernel."""

from __future__ import annotations

import torch

import engine.kernels.llama_decode as llama_decode


def kernel_steps(monkeypatch) -> list[tuple[int, torch.Tensor]]:
    """(rows, weight table) of every decode step that goes through the kernel, as they
    happen (the real kernel still runs)."""
    steps = []
    original = llama_decode.decode_logits

    def recording(model, table, token_ids, *args):
        steps.append((token_ids.numel(), table))
        return original(model, table, token_ids, *args)

    monkeypatch.setattr(llama_decode, "decode_logits", recording)
    return steps

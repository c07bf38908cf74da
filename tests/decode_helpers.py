"""What the C++ decode step's tests share: tiny models with and without Qwen2's biases,
and a way to see every step that goes through the kernel."""

from __future__ import annotations

import pytest
import torch

import engine.kernels.llama_decode as llama_decode
from engine.loading import load_model
from tiny_models import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tiny_with_biases(tmp_path_factory):
    """Qwen2-style q/k/v biases, and a tied LM head."""
    directory = make_tiny_model_dir(tmp_path_factory.mktemp("qwen") / "model", model_type="qwen2", tie_word_embeddings=True)
    return load_model(directory)


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

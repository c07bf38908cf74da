"""`Checkpoint`: a model read from disk but not yet built, and building it.

Every source format (HF directory, GGUF file) is read into the same shape: a config,
tensors under HF parameter names, a tokenizer and a chat template. From there
`build_model` makes the network and the model store writes a directory. The network is
created with its parameters on the meta device and the loaded tensors are assigned in
place, so weights are held in memory once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from engine.bundle import LoadedModel
from engine.config import ModelConfig
from engine.errors import ModelLoadError
from engine.models.registry import build_model as build_network
from engine.text.chat_template import ChatTemplate
from engine.text.tokenizer import Tokenizer

TIED_HEAD = "lm_head.weight"
EMBEDDINGS = "model.embed_tokens.weight"
T = TypeVar("T")

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "f16": torch.float16, "half": torch.float16,
}


@dataclass
class Checkpoint:
    config: ModelConfig
    tensors: dict[str, torch.Tensor]  # HF names; no lm_head.weight when embeddings are tied
    tokenizer: Tokenizer
    chat_template: str | None  # the template source; None means the ChatML fallback
    source: Path
    metadata: dict[str, Any] = field(default_factory=dict)


class TiesEmbeddings(Protocol):
    """A config that says whether the LM head is the input embedding matrix (an engine
    `ModelConfig`, or a transformers config in the tests)."""

    tie_word_embeddings: bool


def stored_tensors(tensors: Mapping[str, T], config: TiesEmbeddings) -> dict[str, T]:
    """What a model file stores of `tensors` (by HF name): all of them but the LM head when
    `config` ties it to the embeddings, since it is then the embedding matrix itself. The
    model store, the GGUF export and the trainer's new versions all write this."""
    return {name: t for name, t in tensors.items() if not (config.tie_word_embeddings and name == TIED_HEAD)}


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device) -> torch.dtype:
    """The compute dtype: as asked, else fp32 on CPU (no fast bf16 there) and bf16 on GPUs."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r} (use one of float32, bfloat16, float16)") from None


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The parameter names and shapes a checkpoint must provide for `config`."""
    with torch.device("meta"):
        model = build_network(config)
    return {name: tuple(t.shape) for name, t in stored_tensors(model.state_dict(), config).items()}


def check_tensors(config: ModelConfig, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """ModelLoadError naming the first missing, unexpected or misshapen weight."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"{source}: weight {missing[0]!r} is missing{more}")
    unexpected = sorted(set(tensors) - set(expected) - {TIED_HEAD})
    if unexpected:
        raise ModelLoadError(f"{source}: unexpected weight {unexpected[0]!r} for a {config.model_type} model")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelLoadError(
                f"{source}: weight {name!r} has shape {tuple(tensors[name].shape)}, config implies {shape}"
            )


def build_model(checkpoint: Checkpoint, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
                name: str = "") -> LoadedModel:
    """The network with the checkpoint's weights, on `device` in `dtype`, in eval mode.

    The checkpoint's tensors are moved into the model (the checkpoint is emptied).
    """
    from accelerate import init_empty_weights  # parameters on meta, buffers (rotary) real

    config = checkpoint.config
    target = resolve_dtype(dtype, device)
    tensors = checkpoint.tensors = stored_tensors(checkpoint.tensors, config)  # a tied head comes from the embedding
    check_tensors(config, tensors, checkpoint.source)
    with init_empty_weights(include_buffers=False):
        model = build_network(config)
    for key in list(tensors):
        tensor = tensors.pop(key)  # release as we go, so weights exist once
        _assign(model, key, tensor.to(device=device, dtype=target))
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.to(device)  # buffers
    model.eval()
    template = ChatTemplate.for_tokenizer(checkpoint.chat_template, checkpoint.tokenizer)
    return LoadedModel(
        model=model,
        config=config,
        tokenizer=checkpoint.tokenizer,
        chat_template=template,
        path=checkpoint.source,
        name=name or checkpoint.source.name,
        metadata=dict(checkpoint.metadata),
    )


def _assign(model: torch.nn.Module, key: str, tensor: torch.Tensor) -> None:
    module_path, _, attr = key.rpartition(".")
    module = model.get_submodule(module_path)
    setattr(module, attr, torch.nn.Parameter(tensor))

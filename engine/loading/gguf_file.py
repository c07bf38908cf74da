"""Read a GGUF file (llama, qwen2, phi3 or gemma3 architecture) into a `Checkpoint`.

The config comes from the architecture's keys (engine/loading/gguf_config.py). The
tensors are dequantized to float32 with the gguf package (`SUPPORTED_TYPES`: the float
types, the legacy and k-quants, and the i-quants that llama.cpp's imatrix quantizations
use), renamed to HF parameter names and put back in HF's form: llama.cpp's q/k row order
and Gemma's norm offset undone, Phi-3's fused projections split (all by
engine/loading/gguf_names.py's layouts). The tokenizer is rebuilt from metadata
(engine/loading/gguf_tokenizer.py) and the chat template kept. Other architectures and
tensor types are refused with a message naming them, before any slow work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gguf_quants

from engine.config import ModelConfig
from engine.errors import ModelLoadError
from engine.loading.checkpoint import Checkpoint
from engine.loading.gguf_config import config_from_gguf, gguf_layout
from engine.loading.gguf_names import GGUFLayout, from_gguf_layout
from engine.loading.gguf_reader import GGUFFile, TensorInfo
from engine.loading.gguf_tokenizer import tokenizer_from_gguf
from engine.loading.hf_dir import check_vocabulary
from engine.loading.validation import check_config, check_gguf_metadata

SUPPORTED_TYPES = {
    GGMLQuantizationType[name]
    for name in (
        "F32", "F16", "BF16",
        "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
        "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
    )
}

ROPE_FREQS = "rope_freqs.weight"


def open_gguf(path: Path) -> GGUFFile:
    """The file, open for reading; ModelLoadError if it is not a complete GGUF file."""
    return GGUFFile(path)


def tensor_shapes(file: GGUFFile) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape by name, in numpy's order (slowest dimension first)."""
    return {t.name: t.shape for t in file.tensors}


def check_tensor_type(tensor: TensorInfo, path: Path) -> GGMLQuantizationType:
    """The tensor's type; ModelLoadError if this loader cannot dequantize it."""
    try:
        qtype = GGMLQuantizationType(tensor.type_number)
    except ValueError:
        raise ModelLoadError(f"{path}: tensor {tensor.name} has unknown type number {tensor.type_number}") from None
    if qtype not in SUPPORTED_TYPES:
        supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise ModelLoadError(
            f"{path}: tensor {tensor.name} uses quantization type {qtype.name}, which is not supported "
            f"(supported: {supported})"
        )
    block, _ = GGML_QUANT_SIZES[qtype]
    if tensor.shape and tensor.shape[-1] % block:
        raise ModelLoadError(f"{path}: tensor {tensor.name} rows of {tensor.shape[-1]} do not split into "
                             f"{qtype.name} blocks of {block}")
    return qtype


# Blocks dequantized per call: gguf's own row grouping makes thousands of small calls on
# an embedding matrix; one call per ~256K values keeps numpy's vector work long.
_BLOCKS_PER_CALL = 8192


def dequantize(file: GGUFFile, tensor: TensorInfo) -> np.ndarray:
    """One tensor as a float32 array of its own (not a view of the file), numpy-shaped."""
    qtype = check_tensor_type(tensor, file.path)
    raw = file.raw(tensor)
    if qtype == GGMLQuantizationType.F32:
        return raw.view(np.float32).reshape(tensor.shape).copy()
    block, size = GGML_QUANT_SIZES[qtype]
    out = np.empty(tensor.num_elements, dtype=np.float32)
    num_blocks = raw.size // size
    try:
        for first in range(0, num_blocks, _BLOCKS_PER_CALL):
            last = min(num_blocks, first + _BLOCKS_PER_CALL)
            chunk = raw[first * size:last * size].reshape(1, -1)
            out[first * block:last * block] = gguf_quants.dequantize(chunk, qtype).reshape(-1)
    except (ValueError, AssertionError) as exc:
        raise ModelLoadError(f"{file.path}: tensor {tensor.name} cannot be dequantized ({exc})") from None
    return out.reshape(tensor.shape)


def read_gguf(path: Path) -> Checkpoint:
    """Config, float32 tensors under HF names, tokenizer and chat template of a GGUF file."""
    file = open_gguf(path)
    fields = file.fields
    parts = fields.get("split.count", 1)
    if isinstance(parts, int) and parts > 1:
        raise ModelLoadError(f"{path}: one part of a GGUF file split in {parts}; merge the parts first "
                             "(llama.cpp's llama-gguf-split --merge)")
    layout = gguf_layout(fields, path)  # refuse an architecture not covered before anything else
    by_name = {t.name: t for t in file.tensors}
    for tensor in file.tensors:
        check_tensor_type(tensor, path)  # refuse before any slow work
    rope_freqs = dequantize(file, by_name[ROPE_FREQS]) if ROPE_FREQS in by_name else None
    check_gguf_metadata(fields, tensor_shapes(file), path, rope_freqs)  # before anything is sized from them
    config = config_from_gguf(fields, set(by_name), path, rope_freqs)
    check_config(config, path)
    tokenizer = tokenizer_from_gguf(fields, path)
    check_vocabulary(tokenizer, config, path)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in by_name.items():
        if name == ROPE_FREQS:
            continue
        for target, values in _hf_tensors(name, dequantize(file, tensor), layout, config, path):
            tensors[target] = torch.from_numpy(np.ascontiguousarray(from_gguf_layout(target, values, config, layout)))
    template = fields.get("tokenizer.chat_template")
    info = {"format": "gguf", "gguf_name": fields.get("general.name"), "file_type": fields.get("general.file_type"),
            "gguf_architecture": layout.architecture}
    return Checkpoint(config, tensors, tokenizer, template if isinstance(template, str) else None, path, info)


def _hf_tensors(name: str, values: np.ndarray, layout: GGUFLayout, config: ModelConfig,
                path: Path) -> list[tuple[str, np.ndarray]]:
    """The HF tensors one GGUF tensor holds: itself renamed, or a fused one's parts."""
    parts = layout.fused_parts(name)
    if parts is None:
        target = layout.to_hf(name)
        if target is None:
            raise ModelLoadError(f"{path}: unexpected tensor {name!r} for a {layout.architecture} model")
        return [(target, values)]
    q, kv, ffn = (config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim,
                  config.intermediate_size)
    rows = [q, kv, kv] if len(parts) == 3 else [ffn, ffn]
    if values.shape[0] != sum(rows):
        raise ModelLoadError(f"{path}: fused tensor {name} has {values.shape[0]} rows, the config implies {sum(rows)}")
    return list(zip(parts, np.split(values, np.cumsum(rows)[:-1], axis=0)))

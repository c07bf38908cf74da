"""Read a llama-architecture GGUF file into a `Checkpoint`.

The config comes from the `llama.*` keys, the tensors are dequantized to float32 with the
gguf package (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and renamed to
HF parameter names, and llama.cpp's reordering of the query/key rows is undone (both by
engine/loading/gguf_names.py). The tokenizer is rebuilt from metadata
(engine/loading/gguf_tokenizer.py) and the chat template kept. Other architectures and
quantization types are refused with a message naming them.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf import quants as gguf_quants

from engine.config import ModelConfig, rope_inverse_frequencies
from engine.errors import ModelLoadError
from engine.loading.checkpoint import TIED_HEAD, Checkpoint
from engine.loading.gguf_names import from_gguf_layout, gguf_tensor_name, hf_tensor_name
from engine.loading.gguf_tokenizer import tokenizer_from_gguf
from engine.loading.hf_dir import check_vocabulary
from engine.loading.validation import check_config, check_gguf_metadata

SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_TYPES = {
    GGMLQuantizationType[name]
    for name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
}

ROPE_FREQS = "rope_freqs.weight"


def open_gguf(path: Path) -> GGUFReader:
    """A reader over the file; ModelLoadError if it is not a complete GGUF file."""
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, struct.error, OSError, UnicodeDecodeError) as exc:
        # The reader fails this way on a bad header and on data cut short alike.
        raise ModelLoadError(f"{path}: not a valid GGUF file, truncated or corrupt ({exc})") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise ModelLoadError(
                f"{path}: truncated GGUF file (tensor {tensor.name} ends at byte {end}, file has {size})"
            )
    return reader


def tensor_shapes(reader: GGUFReader) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape by name, in numpy's order (GGUF lists the fastest dimension first)."""
    return {t.name: tuple(int(n) for n in reversed(list(t.shape))) for t in reader.tensors}


def metadata(reader: GGUFReader, path: Path) -> dict[str, Any]:
    """Every key/value of the file as plain Python values."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            out[key] = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path}: corrupt GGUF metadata {key!r} ({exc})") from None
    return out


def config_from_gguf(fields: dict[str, Any], tensor_names: set[str], path: Path, rope_freqs: np.ndarray | None) -> ModelConfig:
    arch = fields.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"{path}: unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )

    def key(name: str, default: Any = ModelLoadError) -> Any:
        value = fields.get(f"{arch}.{name}", default)
        if value is ModelLoadError:
            raise ModelLoadError(f"{path}: missing GGUF key {arch}.{name}")
        if isinstance(value, list):
            raise ModelLoadError(f"{path}: per-layer {arch}.{name} is not supported")
        return value

    hidden = int(key("embedding_length"))
    heads = int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", hidden // heads))
    rotary_dim = int(key("rope.dimension_count", head_dim))
    if rotary_dim != head_dim:
        raise ModelLoadError(f"{path}: partial rotary embeddings ({rotary_dim} of {head_dim}) are not supported")
    tokens = fields.get("tokenizer.ggml.tokens") or []
    config = ModelConfig(
        model_type="llama",
        vocab_size=int(key("vocab_size", len(tokens))),
        hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length")),
        num_hidden_layers=int(key("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(key("attention.head_count_kv", heads)),
        head_dim=head_dim,
        max_position_embeddings=int(key("context_length", 2048)),
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        tie_word_embeddings=gguf_tensor_name(TIED_HEAD) not in tensor_names,
        qkv_bias=gguf_tensor_name("model.layers.0.self_attn.q_proj.bias") in tensor_names,
        o_bias=gguf_tensor_name("model.layers.0.self_attn.o_proj.bias") in tensor_names,
        bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=fields.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=fields.get("tokenizer.ggml.padding_token_id"),
    )
    config.rope_scaling = _rope_scaling(fields, arch, config, rope_freqs, path)
    return config


def _rope_scaling(fields: dict[str, Any], arch: str, config: ModelConfig, rope_freqs: np.ndarray | None,
                  path: Path) -> dict[str, Any] | None:
    kind = fields.get(f"{arch}.rope.scaling.type", "none")
    factor = float(fields.get(f"{arch}.rope.scaling.factor", 1.0))
    if rope_freqs is not None:
        return _llama3_scaling(rope_freqs, fields, arch, config, path)
    if kind == "none" or factor == 1.0:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    raise ModelLoadError(f"{path}: unsupported rope scaling type {kind!r}")


def _llama3_scaling(rope_freqs: np.ndarray, fields: dict[str, Any], arch: str, config: ModelConfig,
                    path: Path) -> dict[str, Any]:
    """Llama 3.1-style scaling, stored by llama.cpp as per-frequency divisors (rope_freqs).

    The divisors are matched against the llama3 formula with the factor they imply; the
    usual low/high frequency factors are tried, and anything else is refused.
    """
    factors = np.asarray(rope_freqs, dtype=np.float64).reshape(-1)
    factor = float(factors.max())
    original = int(fields.get(f"{arch}.rope.scaling.original_context_length", 8192))
    plain = ModelConfig(**{**config.__dict__, "rope_scaling": None})
    base = np.array(rope_inverse_frequencies(plain))
    for low, high in ((1.0, 4.0), (1.0, 2.0), (2.0, 4.0)):
        candidate = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                     "original_max_position_embeddings": original}
        plain.rope_scaling = candidate
        scaled = np.array(rope_inverse_frequencies(plain))
        if len(scaled) == len(factors) and np.allclose(base / scaled, factors, rtol=1e-3):
            return candidate
    raise ModelLoadError(f"{path}: rope_freqs do not match llama3 rope scaling; not supported")


def check_tensor_type(tensor: Any, path: Path) -> GGMLQuantizationType:
    """The tensor's type; ModelLoadError if this loader cannot dequantize it."""
    try:
        qtype = GGMLQuantizationType(int(tensor.tensor_type))
    except ValueError:
        raise ModelLoadError(f"{path}: tensor {tensor.name} has unknown type number {int(tensor.tensor_type)}") from None
    if qtype not in SUPPORTED_TYPES:
        supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise ModelLoadError(
            f"{path}: tensor {tensor.name} uses quantization type {qtype.name}, which is not supported "
            f"(supported: {supported})"
        )
    return qtype


def dequantize(tensor: Any, path: Path) -> np.ndarray:
    """One tensor as float32, in numpy's (rows, columns) order."""
    qtype = check_tensor_type(tensor, path)
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest dimension first
    try:
        values = gguf_quants.dequantize(tensor.data, qtype)
    except (ValueError, AssertionError) as exc:
        raise ModelLoadError(f"{path}: tensor {tensor.name} cannot be dequantized ({exc})") from None
    if np.may_share_memory(values, tensor.data):  # F32 comes back as a view of the read-only file map
        values = np.array(values, dtype=np.float32)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def read_gguf(path: Path) -> Checkpoint:
    """Config, float32 tensors under HF names, tokenizer and chat template of a GGUF file."""
    reader = open_gguf(path)
    fields = metadata(reader, path)
    by_name = {t.name: t for t in reader.tensors}
    for tensor in reader.tensors:
        check_tensor_type(tensor, path)  # refuse before any slow work
    rope_freqs = dequantize(by_name[ROPE_FREQS], path) if ROPE_FREQS in by_name else None
    check_gguf_metadata(fields, tensor_shapes(reader), path, rope_freqs)  # before anything is sized from them
    config = config_from_gguf(fields, set(by_name), path, rope_freqs)
    check_config(config, path)
    tokenizer = tokenizer_from_gguf(fields, path)
    check_vocabulary(tokenizer, config, path)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in by_name.items():
        if name == ROPE_FREQS:
            continue
        target = hf_tensor_name(name)
        if target is None:
            raise ModelLoadError(f"{path}: unexpected tensor {name!r} for a llama model")
        tensors[target] = torch.from_numpy(from_gguf_layout(target, dequantize(tensor, path), config))
    template = fields.get("tokenizer.chat_template")
    info = {"format": "gguf", "gguf_name": fields.get("general.name"), "file_type": fields.get("general.file_type")}
    return Checkpoint(config, tensors, tokenizer, template if isinstance(template, str) else None, path, info)

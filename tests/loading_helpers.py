"""Builders for the loading/tokenizer tests: tiny tokenizers, HF directories, GGUF files.

Everything is made here from scratch with the real libraries (sentencepiece's trainer,
the tokenizers trainer, transformers' `save_pretrained`, gguf's `GGUFWriter`), so the code
under test reads files exactly as those tools write them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import sentencepiece
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf import quants as gguf_quants
from tokenizers import Tokenizer as HFTokenizer

from engine.config import ModelConfig
from engine.export.gguf import write_hyperparameters
from engine.loading.checkpoint import stored_tensors
from engine.loading.gguf_names import LAYOUTS, LLAMA, to_gguf_layout
from engine.models.registry import config_from_dict
from engine.text import sentencepiece_proto as spp
from tiny_models import train_bpe_tokenizer

# English, Chinese, emoji (incl. a ZWJ sequence), code, whitespace runs, tabs, newlines.
MIXED_TEXT = (
    "Hello world! The quick brown fox jumps over the lazy dog.\n"
    "你好，世界。我们在学习机器学习。 Emoji: 😀🚀 👩‍💻 and café naïve.\n"
    "def add(a, b):\n    return a + b  # 12345\n\n\n"
    "x    =    [1, 2, 3]\t\ttabs\tand   spaces   \n  indented line"
)

_WORDS = (
    "the quick brown fox jumps over lazy dog hello world print def return class import "
    "numpy tensor model value index 你好 世界 我们 学习 机器 数据 😀 🚀 café naïve"
).split()


def corpus_lines(count: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        if i % 5 == 0:
            line += "  x = f(y, 42)\n\tz = [1, 2]"
        lines.append(line)
    return lines


def train_sentencepiece(directory: Path, vocab_size: int = 400) -> Path:
    """A Llama-style sentencepiece BPE model (identity normalizer, byte fallback)."""
    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines()), encoding="utf-8")
    prefix = directory / "sp"
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        character_coverage=1.0,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        allow_whitespace_only_pieces=True,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def train_byte_level_bpe(vocab_size: int = 400, specials: list[str] | None = None) -> HFTokenizer:
    """tiny_models' byte-level BPE, trained on the mixed-script corpus above."""
    return train_bpe_tokenizer(corpus_lines(), vocab_size, specials)


def write_sentencepiece_dir(directory: Path, model_file: Path) -> Path:
    """An HF tokenizer directory with tokenizer.model and a Llama-like tokenizer_config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(model_file.read_bytes())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def tiny_hf_config(model_type: str = "llama", vocab_size: int = 400, tie: bool = False, **extra):
    """A transformers config for a 2-layer, 64-wide model."""
    import transformers

    classes = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
    }
    return classes[model_type](
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        **extra,
    )


def tiny_hf_model(config, seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    # Larger-than-default weights so logits differ clearly between tokens.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0.0, 0.08)
            elif "bias" in name:
                param.normal_(0.0, 0.05)
    return model.eval()


def write_hf_model_dir(directory: Path, model, tokenizer_dir_writer, max_shard_size: str | None = None) -> Path:
    """save_pretrained (safetensors), then the tokenizer files."""
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    tokenizer_dir_writer(directory)
    return directory


# -- GGUF --------------------------------------------------------------------------------


def _as_gguf_tensor(values: np.ndarray, qtype: GGMLQuantizationType) -> tuple[np.ndarray, GGMLQuantizationType | None]:
    values = np.ascontiguousarray(values, dtype=np.float32)
    if qtype == GGMLQuantizationType.F32 or values.ndim == 1:
        return values, None  # norms stay F32, as llama.cpp writes them
    if qtype == GGMLQuantizationType.F16:
        return values.astype(np.float16), None
    return gguf_quants.quantize(values, qtype), qtype


# Phi-3's fused projections keep their HF tensors whole in GGUF (llama.cpp's converter
# writes them as they are), under these names.
PHI3_FUSED_NAMES = {"self_attn.qkv_proj.weight": "attn_qkv.weight", "mlp.gate_up_proj.weight": "ffn_up.weight"}


def engine_config_of(hf_config) -> ModelConfig:
    """The engine config of a transformers config (Phi-3 is the Llama decoder to the engine)."""
    raw = hf_config.to_dict()
    if raw["model_type"] == "phi3":
        raw = {**raw, "model_type": "llama"}
    return config_from_dict(raw)


def write_gguf(
    path: Path,
    hf_model,
    qtype: GGMLQuantizationType = GGMLQuantizationType.F32,
    tokenizer_fields: dict | None = None,
    chat_template: str | None = None,
    architecture: str = "llama",
    extra_tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType | None]] | None = None,
) -> Path:
    """A GGUF file of a transformers model, laid out as llama.cpp's converter does for
    `architecture` (an architecture the engine does not cover is laid out as llama).

    The hyper-parameters are written as the exporter writes them (engine/export/gguf.py),
    tensor names and layout (llama's Q/K row order, Gemma's 1 + norm) are llama.cpp's
    (engine/loading/gguf_names.py; the tests that load these files in transformers too
    check that they are llama.cpp's), norms are F32 and matrices use `qtype`.
    `tokenizer_fields` are written as `tokenizer.ggml.*` metadata.
    """
    cfg = hf_model.config
    layout = LAYOUTS.get(architecture, LLAMA)
    writer = GGUFWriter(str(path), architecture)
    writer.add_name("tiny-test-model")
    write_hyperparameters(writer, engine_config_of(cfg))
    writer.add_file_type(int(qtype))
    for key, value in (tokenizer_fields or {}).items():
        _add_tokenizer_field(writer, key, value)
    if chat_template:
        writer.add_chat_template(chat_template)

    state = {k: v.detach().float().numpy() for k, v in stored_tensors(hf_model.state_dict(), cfg).items()}
    for name, values in state.items():
        part = name.split(".", 3)[-1]
        if part in PHI3_FUSED_NAMES:
            gguf_name = f"blk.{name.split('.')[2]}.{PHI3_FUSED_NAMES[part]}"
        else:
            gguf_name = layout.to_gguf(name)
        data, raw = _as_gguf_tensor(to_gguf_layout(name, values, cfg, layout), qtype)
        writer.add_tensor(gguf_name, data, raw_dtype=raw)
    for name, (data, raw) in (extra_tensors or {}).items():
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tokenizer_field(writer: GGUFWriter, key: str, value) -> None:
    full = f"tokenizer.ggml.{key}"
    if isinstance(value, bool):
        writer.add_bool(full, value)
    elif isinstance(value, int):
        writer.add_uint32(full, value)
    elif isinstance(value, str):
        writer.add_string(full, value)
    else:
        writer.add_array(full, list(value))


def gpt2_tokenizer_fields(tokenizer: HFTokenizer, pre: str = "default") -> dict:
    """`tokenizer.ggml.*` for a byte-level BPE, as llama.cpp's converter writes them."""
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = {t["content"] for t in data["added_tokens"] if t["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return {
        "model": "gpt2",
        "pre": pre,
        "tokens": tokens,
        "token_type": [3 if t in special else 1 for t in tokens],
        "merges": merges,
        "bos_token_id": vocab["<|im_start|>"],
        "eos_token_id": vocab["<|im_end|>"],
        "padding_token_id": vocab["<|endoftext|>"],
        "add_bos_token": False,
    }


def llama_tokenizer_fields(model_file: Path) -> dict:
    """`tokenizer.ggml.*` for a sentencepiece model: tokens, scores and types, llama.cpp style."""
    pieces = spp.read_pieces(model_file.read_bytes())
    return {
        "model": "llama",
        "tokens": [p.text for p in pieces],
        "scores": [float(p.score) for p in pieces],
        "token_type": [p.type for p in pieces],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "unknown_token_id": 0,
        "add_bos_token": True,
        "add_space_prefix": True,
    }


def transformers_gguf_reading(path: Path):
    """(tokenizer, model) as transformers reads a GGUF file itself: the reference the
    real-model tests hold the engine against (fp32, eval mode)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return tokenizer, model.eval()

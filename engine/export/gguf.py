"""Export a model directory to a GGUF file for llama.cpp and Ollama.

The file's architecture is the one llama.cpp uses for the model: "llama" for Llama,
Mistral, SmolLM and TinyLlama, "qwen2" for Qwen2, "gemma3" for Gemma 3 text models. It
holds the `<arch>.*` hyper-parameters, every weight under llama.cpp's tensor names and in
its layout (query/key rows reordered for the llama architecture's rotary layout, Gemma's
norms stored as 1 + weight; both from engine/loading/gguf_names.py), the tokenizer as
metadata (byte-level BPE as "gpt2" with tokens and merges, or a sentencepiece model as
"llama" with tokens, scores and piece types), the special token ids, and the chat
template. Weights are written as f32, f16, q8_0 or q4_0: matrices whose rows split into
32-value blocks in the quantized type (for q4_0, the output matrix, or the embedding that
serves as it, in q8_0, as llama.cpp's own quantizer writes it for such shapes and as the
engine decodes it: engine/kernels/quantized_copy.py), the rest f16, norms f32 as
llama.cpp does. The file is written beside the target and renamed into place, so a
failed export leaves nothing behind. It runs in llama.cpp and Ollama and loads back
through engine/loading/gguf_file.py.

PaLM models (parallel attention/feed-forward blocks, LayerNorm) have no GGUF
architecture and are refused. Reading model directories is engine/loading's job; the
command is `chat-tui models export`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
import torch
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType
from gguf import quants as gguf_quants

from engine.config import ModelConfig
from engine.errors import EngineError, write_error
from engine.kernels.quantized_copy import HEAD_QUANT
from engine.loading.checkpoint import Checkpoint, stored_tensors
from engine.loading.gguf_config import GEMMA3_27B_LAYERS
from engine.loading.gguf_names import GEMMA3, LLAMA, QWEN2, GGUFLayout, to_gguf_layout
from engine.loading.gguf_tokenizer import PRE_TOKENIZERS
from engine.loading.hf_dir import read_hf_config, read_hf_directory
from engine.text import sentencepiece_proto as spp
from engine.models.gemma3 import DEFAULT_LOCAL_ROPE_BASE, sliding_window_layers
from engine.text.chat_template import ChatTemplate

EXPORT_TYPES = ("f16", "q8_0", "q4_0", "f32")
_FILE_TYPES = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
               "q4_0": LlamaFileType.MOSTLY_Q4_0}
_QUANTIZED = {"q8_0": GGMLQuantizationType.Q8_0, "q4_0": GGMLQuantizationType.Q4_0}
Q8_BLOCK = 32  # values per block of both quantized types
# Engine model type -> the GGUF layout llama.cpp runs it with.
EXPORT_LAYOUTS: dict[str, GGUFLayout] = {"llama": LLAMA, "mistral": LLAMA, "qwen2": QWEN2, "gemma3_text": GEMMA3}

# Text that tells byte-level pre-tokenizers apart: contractions, digit runs, letters after
# punctuation, runs of spaces and newlines, non-ASCII letters.
_PRE_TOKENIZER_PROBE = "I'LL say it's 12345 times:\n\n  hello,world  ¿Qué?\t3.14 don't\r\nend  "


class ExportError(EngineError):
    """A model that cannot be written as GGUF, or a bad export option."""


@dataclass
class GGUFVocabulary:
    kind: str  # "gpt2" or "llama"
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    add_space_prefix: bool | None = None
    add_bos: bool = False


def check_exportable(model_dir: Path) -> ModelConfig:
    """The model's config, or an ExportError when no GGUF architecture can hold it
    (a ModelLoadError when there is no readable config at all)."""
    config = read_hf_config(model_dir)
    if config.model_type not in EXPORT_LAYOUTS:
        raise ExportError(
            f"{model_dir.name}: a {config.model_type!r} model cannot be exported to GGUF: no GGUF "
            f"architecture has an equivalent of its blocks (only {', '.join(EXPORT_LAYOUTS)} models export)"
        )
    rope_type = (config.rope_scaling or {}).get("rope_type", "default")
    if rope_type not in ("default", "linear"):
        raise ExportError(f"{model_dir.name}: rope scaling {rope_type!r} is not supported by the GGUF export")
    return config


# -- tokenizer ------------------------------------------------------------------------------


def _padded(tokens: dict[int, str], types: dict[int, int], size: int) -> tuple[list[str], list[int]]:
    """Dense lists of `size` entries; ids without a token become unused placeholders."""
    out_tokens, out_types = [], []
    for i in range(size):
        out_tokens.append(tokens.get(i, f"[PAD{i}]"))
        out_types.append(types.get(i, TokenType.UNUSED if i not in tokens else TokenType.NORMAL))
    return out_tokens, out_types


def _pre_tokenizer_name(backend: tokenizers.Tokenizer, source: Path) -> str:
    """The GGUF `tokenizer.ggml.pre` whose split rule cuts text as this tokenizer does."""
    if backend.pre_tokenizer is None:
        raise ExportError(f"{source}: byte-level BPE without a pre-tokenizer cannot be described in GGUF")
    want = backend.pre_tokenizer.pre_tokenize_str(_PRE_TOKENIZER_PROBE)
    for name in ("gpt2", "smollm", "llama-bpe", "qwen2"):
        make, _ = PRE_TOKENIZERS[name]
        if make().pre_tokenize_str(_PRE_TOKENIZER_PROBE) == want:
            return name
    raise ExportError(f"{source}: this tokenizer's pre-tokenizer matches none GGUF can name")


def _byte_level_vocabulary(json_file: Path, size: int) -> GGUFVocabulary | None:
    raw = json.loads(json_file.read_text(encoding="utf-8"))
    model = raw.get("model") or {}
    if model.get("type") != "BPE" or (raw.get("decoder") or {}).get("type") != "ByteLevel":
        return None  # e.g. a Llama-2 tokenizer.json: the sentencepiece file describes it
    backend = tokenizers.Tokenizer.from_file(str(json_file))
    tokens = {i: t for t, i in backend.get_vocab(with_added_tokens=True).items()}
    types: dict[int, int] = {i: TokenType.NORMAL for i in tokens}
    for i, added in backend.get_added_tokens_decoder().items():
        types[i] = TokenType.CONTROL if added.special else TokenType.USER_DEFINED
    if max(tokens) >= size:
        raise ExportError(f"{json_file}: token id {max(tokens)} is past the model's vocab_size {size}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    dense_tokens, dense_types = _padded(tokens, types, size)
    probe = backend.encode("a", add_special_tokens=True).ids
    plain = backend.encode("a", add_special_tokens=False).ids
    return GGUFVocabulary(
        kind="gpt2",
        tokens=dense_tokens,
        types=[int(t) for t in dense_types],
        merges=merges,
        pre=_pre_tokenizer_name(backend, json_file),
        add_bos=len(probe) > len(plain) and probe[1:] == plain,
    )


def _sentencepiece_vocabulary(model_file: Path, checkpoint: Checkpoint, size: int) -> GGUFVocabulary:
    model = model_file.read_bytes()
    pieces = spp.read_pieces(model)
    tokens = {i: p.text for i, p in enumerate(pieces)}
    types = {i: p.type for i, p in enumerate(pieces)}
    scores = {i: p.score for i, p in enumerate(pieces)}
    # Tokens added on top of the sentencepiece model (tokenizer_config's added_tokens_decoder).
    special_ids = checkpoint.tokenizer.special_token_ids
    for text, i in checkpoint.tokenizer.added_tokens.items():
        if i >= len(pieces):
            tokens[i] = text
            types[i] = spp.CONTROL if i in special_ids else spp.USER_DEFINED
            scores[i] = 0.0
    if max(tokens) >= size:
        raise ExportError(f"{model_file}: token id {max(tokens)} is past the model's vocab_size {size}")
    dense_tokens, dense_types = _padded(tokens, types, size)
    return GGUFVocabulary(
        kind="llama",
        tokens=dense_tokens,
        types=[int(t) for t in dense_types],
        scores=[float(scores.get(i, -1e9)) for i in range(size)],
        add_space_prefix=spp.adds_dummy_prefix(model),
        add_bos=bool(checkpoint.tokenizer.add_bos_token),
    )


def gguf_vocabulary(model_dir: Path, checkpoint: Checkpoint) -> GGUFVocabulary:
    """The tokenizer of a model directory, in GGUF's terms."""
    size = checkpoint.config.vocab_size
    json_file, model_file = model_dir / "tokenizer.json", model_dir / "tokenizer.model"
    vocabulary = _byte_level_vocabulary(json_file, size) if json_file.is_file() else None
    if vocabulary is None and model_file.is_file():
        vocabulary = _sentencepiece_vocabulary(model_file, checkpoint, size)
    if vocabulary is None:
        raise ExportError(
            f"{model_dir}: the tokenizer is neither byte-level BPE (tokenizer.json) nor sentencepiece "
            "(tokenizer.model), so GGUF cannot describe it"
        )
    return vocabulary


# -- tensors --------------------------------------------------------------------------------


def _encode_tensor(values: np.ndarray, export_type: str, is_head: bool = False) -> tuple[np.ndarray, GGMLQuantizationType]:
    """The tensor's bytes in the export type: norms/biases stay f32, as llama.cpp keeps them.
    is_head: the matrix the output logits come from, kept in HEAD_QUANT under q4_0."""
    if export_type == "f32" or values.ndim == 1:
        return values.astype(np.float32), GGMLQuantizationType.F32
    if export_type in _QUANTIZED and values.shape[-1] % Q8_BLOCK == 0:
        qtype = _QUANTIZED[HEAD_QUANT if is_head else export_type]
        return gguf_quants.quantize(values.astype(np.float32), qtype), qtype
    return values.astype(np.float16), GGMLQuantizationType.F16


def _gguf_tensors(checkpoint: Checkpoint, layout: GGUFLayout) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) in llama.cpp's layout for the architecture."""
    config = checkpoint.config
    out = []
    # llama.cpp, too, reads the embedding as the output matrix when output.weight is absent.
    for hf_name, tensor in stored_tensors(checkpoint.tensors, config).items():
        name = layout.to_gguf(hf_name)
        if name is None:
            raise ExportError(f"weight {hf_name!r} has no {layout.architecture}-architecture GGUF tensor name")
        values = tensor.detach().to(torch.float32).cpu().numpy()
        out.append((name, to_gguf_layout(hf_name, values, config, layout)))
    return out


# -- writing --------------------------------------------------------------------------------


def write_hyperparameters(writer: GGUFWriter, config: ModelConfig) -> None:
    """The `<arch>.*` keys of a config (the writer's architecture): sizes, heads, norm
    epsilon, rope base and linear rope scaling, and Gemma 3's sliding window. (llama.cpp
    keeps llama3 scaling as a `rope_freqs` tensor, which this export does not write.)"""
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    if config.head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    if config.rope_scaling and config.rope_scaling.get("rope_type") == "linear":
        writer.add_string(f"{writer.arch}.rope.scaling.type", "linear")
        writer.add_rope_scaling_factor(float(config.rope_scaling["factor"]))
    writer.add_vocab_size(config.vocab_size)
    if config.layer_types is not None:
        _write_gemma3_keys(writer, config)


def _write_gemma3_keys(writer: GGUFWriter, config: ModelConfig) -> None:
    """The sliding window, and what llama.cpp otherwise assumes for Gemma 3 (every sixth
    layer global, local rope base 10000, scores scaled by 1/sqrt(head_dim)) only where
    this model differs from it."""
    writer.add_sliding_window(int(config.sliding_window or 0))
    if config.layer_types != sliding_window_layers(config.num_hidden_layers):
        writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in config.layer_types or []])
    if config.rope_local_base_freq not in (None, DEFAULT_LOCAL_ROPE_BASE):
        writer.add_rope_freq_base_swa(float(config.rope_local_base_freq))
    assumed = (config.hidden_size // config.num_attention_heads if config.num_hidden_layers == GEMMA3_27B_LAYERS
               else config.head_dim)
    if config.query_pre_attn_scalar not in (None, float(assumed)):
        writer.add_attention_scale(float(config.query_pre_attn_scalar) ** -0.5)


def _write_metadata(writer: GGUFWriter, config: ModelConfig, vocabulary: GGUFVocabulary, checkpoint: Checkpoint,
                    name: str, export_type: str) -> None:
    writer.add_name(name)
    writer.add_file_type(int(_FILE_TYPES[export_type]))
    write_hyperparameters(writer, config)
    writer.add_tokenizer_model(vocabulary.kind)
    if vocabulary.pre:
        writer.add_tokenizer_pre(vocabulary.pre)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.types)
    if vocabulary.scores is not None:
        writer.add_token_scores(vocabulary.scores)
    if vocabulary.merges is not None:
        writer.add_token_merges(vocabulary.merges)
    if vocabulary.add_space_prefix is not None:
        writer.add_add_space_prefix(vocabulary.add_space_prefix)
    writer.add_add_bos_token(vocabulary.add_bos)
    writer.add_add_eos_token(False)
    tokenizer = checkpoint.tokenizer
    if isinstance(config.bos_token_id, int):
        writer.add_bos_token_id(config.bos_token_id)
    eos_ids = config.eos_token_ids
    if eos_ids:
        writer.add_eos_token_id(eos_ids[0])
    if tokenizer.unk_token_id is not None:
        writer.add_unk_token_id(tokenizer.unk_token_id)
    pad = config.pad_token_id if isinstance(config.pad_token_id, int) else tokenizer.pad_token_id
    if pad is not None:
        writer.add_pad_token_id(pad)
    template = ChatTemplate.for_tokenizer(checkpoint.chat_template, tokenizer)
    # The token that closes an assistant turn, when it is not eos (e.g. <|im_end|>), so
    # llama.cpp stops there too.
    end_of_turn = [i for i in template.stop_token_ids(tokenizer) if i not in eos_ids]
    if end_of_turn:
        writer.add_eot_token_id(end_of_turn[0])
    if checkpoint.chat_template:
        writer.add_chat_template(checkpoint.chat_template)


def export_gguf(model_dir: str | Path, output: str | Path, export_type: str = "f16", name: str | None = None) -> Path:
    """Write `model_dir` (an HF-layout model directory of a type in `EXPORT_LAYOUTS`) as a
    GGUF file at `output`."""
    if export_type not in EXPORT_TYPES:
        raise ExportError(f"GGUF type {export_type!r} is not one of {', '.join(EXPORT_TYPES)}")
    model_dir, output = Path(model_dir), Path(output).expanduser()
    if not output.parent.is_dir():
        raise ExportError(f"cannot write {output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise ExportError(f"cannot write {output}: it is a folder")
    layout = EXPORT_LAYOUTS[check_exportable(model_dir).model_type]
    checkpoint = read_hf_directory(model_dir, dtype=torch.float32)
    vocabulary = gguf_vocabulary(model_dir, checkpoint)
    tensors = _gguf_tensors(checkpoint, layout)

    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    except OSError as exc:  # a read-only folder, a full disk: said of the file asked for
        raise write_error(exc, output) from None
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        writer = GGUFWriter(tmp, arch=layout.architecture)
        _write_metadata(writer, checkpoint.config, vocabulary, checkpoint, name or model_dir.name, export_type)
        # llama.cpp computes the logits with the embedding when the file has no output matrix.
        head = "output.weight" if any(n == "output.weight" for n, _ in tensors) else "token_embd.weight"
        for tensor_name, values in tensors:
            data, qtype = _encode_tensor(values, export_type, is_head=tensor_name == head)
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, output)
    except OSError as exc:
        raise write_error(exc, output) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return output

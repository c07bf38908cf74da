"""Checks on the numbers a model file states about itself, made before anything is built.

A model's `config.json` (with `generation_config.json`) or its GGUF metadata says how big
every part of the network is, and the loaders size Python lists, modules and tensors from
those numbers. Every such value passes through here first, in three steps:

1. its type and range: a size is an integer (not "abc", null, true or 64.5) between 1 and
   a limit far above any real model; epsilons, rope bases and scaling factors are finite
   and positive; token ids are non-negative integers (`check_hf_values` for a config.json
   dict, `check_gguf_metadata` for GGUF keys, both through one table, `LIMITS`);
2. the ratios between them, on the built `ModelConfig` (`check_config`): query heads a
   multiple of key/value heads, llama3 rope frequencies in order, bos/eos ids inside the
   vocabulary;
3. what the file's own tensors say (`check_against_tensors`, and the tensor part of
   `check_gguf_metadata`): the layer count is the number of layers the file holds, the
   embedding matrix is vocab_size x hidden_size, and no size exceeds the largest tensor
   dimension in the file. Only after that is a network built (on the meta device) and its
   exact shapes compared by `checkpoint.check_tensors`.

`confined_file` keeps the weight files a model folder names (a sharded index's entries)
inside that folder. Every failure is a one-line ModelLoadError naming the file, the key
and the value. Reading files and building networks are the loaders' job, not this one's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ModelConfig
from engine.errors import ModelLoadError

# Upper bounds far above any released model (the widest have hidden sizes near 2^14,
# vocabularies near 2^18, about 130 layers) yet low enough that nothing sized from them
# before the tensor checks can exhaust memory.
MAX_WIDTH = 1 << 18
MAX_LAYERS = 1 << 10
MAX_HEADS = 1 << 12
MAX_HEAD_DIM = 1 << 12
MAX_VOCAB = 1 << 22
MAX_CONTEXT = 1 << 26
MAX_SHOWN_CHARS = 60  # of a bad value quoted in an error


@dataclass(frozen=True)
class Rule:
    """What one config value may be: an integer in [low, high], or a finite float in
    (low, high) (open bounds: an epsilon or rope base of 0 is as wrong as a negative one)."""

    kind: str  # "int" or "float"
    low: float
    high: float
    optional: bool = False  # null allowed (the readers take it as absent); absent is always allowed


# One table for both formats, keyed by the ModelConfig field (HF's key names).
LIMITS: dict[str, Rule] = {
    "vocab_size": Rule("int", 1, MAX_VOCAB),
    "hidden_size": Rule("int", 1, MAX_WIDTH),
    "intermediate_size": Rule("int", 1, MAX_WIDTH),
    "num_hidden_layers": Rule("int", 1, MAX_LAYERS),
    "num_attention_heads": Rule("int", 1, MAX_HEADS),
    "num_key_value_heads": Rule("int", 1, MAX_HEADS, optional=True),
    "head_dim": Rule("int", 1, MAX_HEAD_DIM, optional=True),
    "max_position_embeddings": Rule("int", 1, MAX_CONTEXT),
    "sliding_window": Rule("int", 1, MAX_CONTEXT, optional=True),
    "rms_norm_eps": Rule("float", 0.0, 1.0),
    "layer_norm_eps": Rule("float", 0.0, 1.0),
    "rope_theta": Rule("float", 0.0, math.inf),
}
# Inside rope_scaling / rope_parameters.
ROPE_LIMITS: dict[str, Rule] = {
    "factor": Rule("float", 0.0, 1e6),
    "low_freq_factor": Rule("float", 0.0, 1e6),
    "high_freq_factor": Rule("float", 0.0, 1e6),
    "original_max_position_embeddings": Rule("int", 1, MAX_CONTEXT),
    "rope_theta": Rule("float", 0.0, math.inf),
}
FLAGS = ("tie_word_embeddings", "attention_bias", "mlp_bias")
TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")

# GGUF keys (after "<architecture>.") and the config field whose rule they follow.
GGUF_KEYS: dict[str, str] = {
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.value_length": "head_dim",
    "rope.dimension_count": "head_dim",
    "context_length": "max_position_embeddings",
    "vocab_size": "vocab_size",
    "attention.sliding_window": "sliding_window",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.layer_norm_epsilon": "layer_norm_eps",
    "rope.freq_base": "rope_theta",
}
# Keys llama.cpp allows as one value per layer (the loader then names what it does not support).
GGUF_PER_LAYER_KEYS = ("attention.head_count", "attention.head_count_kv", "feed_forward_length")
GGUF_ROPE_KEYS: dict[str, str] = {
    "rope.scaling.factor": "factor",
    "rope.scaling.original_context_length": "original_max_position_embeddings",
}
# Sizes that are some tensor's dimension, so none can exceed the file's largest.
_GGUF_WIDTHS = ("embedding_length", "feed_forward_length", "attention.key_length", "attention.value_length",
                "rope.dimension_count")
GGUF_TOKEN_KEYS = tuple(f"tokenizer.ggml.{k}_token_id" for k in ("bos", "eos", "padding", "unknown"))

_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.")
HF_EMBEDDINGS = "model.embed_tokens.weight"
GGUF_EMBEDDINGS = "token_embd.weight"
ROPE_FREQS = "rope_freqs.weight"


def shown(value: Any) -> str:
    """`value` as quoted in an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def checked_value(value: Any, rule: Rule, name: str, source: str | Path) -> int | float | None:
    """`value` if it obeys `rule` (an integral float counts as an integer), else a
    ModelLoadError naming `name` in `source`."""
    if value is None:
        if rule.optional:
            return None
        raise ModelLoadError(f"{source}: {name} is null; it must be {_describe(rule)}")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if rule.kind == "int":
        if not is_number or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
            raise ModelLoadError(f"{source}: {name}={shown(value)} is not an integer; it must be {_describe(rule)}")
        number: int | float = int(value)
        if not rule.low <= number <= rule.high:
            raise ModelLoadError(f"{source}: {name}={shown(value)} is out of range; it must be {_describe(rule)}")
        return number
    if not is_number:
        raise ModelLoadError(f"{source}: {name}={shown(value)} is not a number; it must be {_describe(rule)}")
    number = float(value)
    if not (math.isfinite(number) and rule.low < number < rule.high):
        raise ModelLoadError(f"{source}: {name}={shown(value)} is out of range; it must be {_describe(rule)}")
    return number


def _describe(rule: Rule) -> str:
    if rule.kind == "int":
        return f"an integer from {int(rule.low)} to {int(rule.high)}"
    if math.isinf(rule.high):
        return f"a finite number above {rule.low:g}"
    return f"a number between {rule.low:g} and {rule.high:g} (exclusive)"


def check_token_ids(value: Any, name: str, source: str | Path) -> None:
    """`value` is a token id, a list of them, or null."""
    ids = value if isinstance(value, list) else [value]
    for token_id in ids:
        if token_id is None and not isinstance(value, list):
            continue
        if not isinstance(token_id, int) or isinstance(token_id, bool):
            raise ModelLoadError(f"{source}: {name}={shown(value)} is not a token id (an integer or a list of them)")


def check_hf_values(raw: Mapping[str, Any], source: str | Path) -> None:
    """Types and ranges of the values a `config.json` dict gives (absent keys are the
    architecture reader's business: it names a missing required one)."""
    model_type = raw.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ModelLoadError(f"{source}: model_type={shown(model_type)} is not a string")
    for key, rule in LIMITS.items():
        if key in raw:
            checked_value(raw[key], rule, key, source)
    heads, kv_heads = raw.get("num_attention_heads"), raw.get("num_key_value_heads")
    if heads is not None and kv_heads is not None and int(heads) % int(kv_heads):
        raise ModelLoadError(
            f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    for key in FLAGS:
        if raw.get(key) is not None and not isinstance(raw[key], bool):
            raise ModelLoadError(f"{source}: {key}={shown(raw[key])} is not true or false")
    for key in TOKEN_ID_KEYS:
        if key in raw:
            check_token_ids(raw[key], key, source)
    for key in ("rope_scaling", "rope_parameters"):
        rope = raw.get(key)
        if rope is None:
            continue
        if not isinstance(rope, Mapping):
            raise ModelLoadError(f"{source}: {key}={shown(rope)} is not an object")
        for name, rule in ROPE_LIMITS.items():
            if name in rope:
                checked_value(rope[name], rule, f"{key}.{name}", source)
        for name in ("type", "rope_type"):
            if rope.get(name) is not None and not isinstance(rope[name], str):
                raise ModelLoadError(f"{source}: {key}.{name}={shown(rope[name])} is not a string")


def check_config(config: ModelConfig, source: str | Path) -> None:
    """Ranges and ratios of a built config, whichever file it came from."""
    for key, rule in LIMITS.items():
        if hasattr(config, key):
            checked_value(getattr(config, key), rule, key, source)
    if config.num_attention_heads % config.num_key_value_heads:
        raise ModelLoadError(
            f"{source}: num_attention_heads={config.num_attention_heads} is not a multiple of "
            f"num_key_value_heads={config.num_key_value_heads}"
        )
    _check_rope_scaling(config, source)
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(config, name)
        check_token_ids(value, name, source)
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and not 0 <= token_id < config.vocab_size:
                raise ModelLoadError(
                    f"{source}: {name}={shown(value)} is outside the vocabulary (vocab_size={config.vocab_size})"
                )
    check_token_ids(config.pad_token_id, "pad_token_id", source)


def _check_rope_scaling(config: ModelConfig, source: str | Path) -> None:
    scaling = config.rope_scaling
    if not scaling:
        return
    for name, rule in ROPE_LIMITS.items():
        if name in scaling:
            checked_value(scaling[name], rule, f"rope_scaling.{name}", source)
    if scaling.get("rope_type") == "llama3":
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        if not low < high:
            raise ModelLoadError(
                f"{source}: rope_scaling low_freq_factor={low:g} must be below high_freq_factor={high:g}"
            )


def check_against_tensors(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], source: str | Path) -> None:
    """The config agrees with the tensors (HF names -> shapes) the file holds: as many
    layers, an embedding matrix of vocab_size x hidden_size, and no size above the largest
    tensor dimension. Called before any tensor is read or any module built."""
    _check_layer_count(config.num_hidden_layers, "num_hidden_layers", shapes, _HF_LAYER, source)
    embeddings = shapes.get(HF_EMBEDDINGS)
    if embeddings is not None and tuple(embeddings) != (config.vocab_size, config.hidden_size):
        raise ModelLoadError(
            f"{source}: vocab_size={config.vocab_size} and hidden_size={config.hidden_size} disagree with "
            f"{HF_EMBEDDINGS} of shape {tuple(embeddings)}"
        )
    largest = _largest_dimension(shapes.values())
    sizes = {
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "num_attention_heads * head_dim": config.num_attention_heads * config.head_dim,
        "num_key_value_heads * head_dim": config.num_key_value_heads * config.head_dim,
    }
    _check_sizes_fit(sizes, largest, source)


def check_gguf_metadata(fields: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], source: str | Path,
                        rope_divisors: np.ndarray | None = None) -> None:
    """Types and ranges of a GGUF file's size keys, token ids and tokenizer keys, and their
    agreement with its tensors (`shapes`: GGUF tensor name -> numpy-order shape, slowest
    dimension first) and its `rope_freqs` divisors, before a config is made from them."""
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        return  # the reader names the missing or unsupported architecture
    values: dict[str, Any] = {}
    for suffix, field_name in {**GGUF_KEYS, **GGUF_ROPE_KEYS}.items():
        key = f"{arch}.{suffix}"
        if key in fields:
            rule = LIMITS.get(field_name) or ROPE_LIMITS[field_name]
            value = fields[key]
            if isinstance(value, list) and suffix not in GGUF_PER_LAYER_KEYS:
                raise ModelLoadError(f"{source}: {key}={shown(value)} is a list; it must be one value")
            for item in value if isinstance(value, list) else [value]:  # per-layer arrays: every entry
                checked_value(item, rule, key, source)
            values[suffix] = max(value, default=0) if isinstance(value, list) else value
    for key in GGUF_TOKEN_KEYS:
        if key in fields and (not isinstance(fields[key], int) or isinstance(fields[key], bool) or fields[key] < 0):
            raise ModelLoadError(f"{source}: {key}={shown(fields[key])} is not a token id")
    _check_tokenizer_fields(fields, source)
    heads, kv_heads = values.get("attention.head_count"), values.get("attention.head_count_kv")
    if heads and kv_heads and heads % kv_heads:
        raise ModelLoadError(
            f"{source}: {arch}.attention.head_count={heads} is not a multiple of "
            f"{arch}.attention.head_count_kv={kv_heads}"
        )
    if "block_count" in values:
        _check_layer_count(values["block_count"], f"{arch}.block_count", shapes, _GGUF_LAYER, source)
    embeddings = shapes.get(GGUF_EMBEDDINGS)
    width = values.get("embedding_length")
    if embeddings is not None and width is not None and embeddings[-1] != width:
        raise ModelLoadError(
            f"{source}: {arch}.embedding_length={width} disagrees with {GGUF_EMBEDDINGS} of shape {embeddings}"
        )
    if rope_divisors is not None:
        _check_rope_divisors(rope_divisors, source)
    sizes = {f"{arch}.{suffix}": values[suffix] for suffix in _GGUF_WIDTHS if suffix in values}
    if heads and "attention.key_length" in values:
        sizes[f"{arch}.attention.head_count * key_length"] = heads * values["attention.key_length"]
    _check_sizes_fit(sizes, _largest_dimension(shapes.values()), source)


def _check_tokenizer_fields(fields: Mapping[str, Any], source: str | Path) -> None:
    """The tokenizer metadata has the types the tokenizer builder reads: names are strings,
    tokens strings, token types integers, scores finite numbers, and each BPE merge two
    non-empty parts around a space."""
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
        if key in fields and not isinstance(fields[key], str):
            raise ModelLoadError(f"{source}: {key}={shown(fields[key])} is not a string")
    lists = {
        "tokenizer.ggml.tokens": lambda v: isinstance(v, str),
        "tokenizer.ggml.token_type": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "tokenizer.ggml.scores": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "tokenizer.ggml.merges": lambda v: isinstance(v, str) and all(v.partition(" ")[::2]),
    }
    for key, is_valid in lists.items():
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise ModelLoadError(f"{source}: {key}={shown(value)} is not a list")
        bad = next((i for i, item in enumerate(value) if not is_valid(item)), None)
        if bad is not None:
            raise ModelLoadError(f"{source}: {key}[{bad}]={shown(value[bad])} is malformed")


def _check_rope_divisors(divisors: np.ndarray, source: str | Path) -> None:
    """llama.cpp's per-frequency rope divisors (one per frequency pair) must be finite and
    positive: the loader divides by them."""
    values = np.asarray(divisors, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)) or not np.all(values > 0):
        bad = values[~(np.isfinite(values) & (values > 0))][:1].tolist() or ["none"]
        raise ModelLoadError(f"{source}: tensor {ROPE_FREQS} holds {bad[0]}; rope divisors must be finite and positive")


def _check_layer_count(stated: int, name: str, shapes: Mapping[str, Any], pattern: re.Pattern[str],
                       source: str | Path) -> None:
    """`stated` layers, and the file's tensors belong to exactly layers 0..stated-1."""
    indices = {int(m.group(1)) for m in map(pattern.match, shapes) if m}
    found = max(indices) + 1 if indices else 0
    if stated != found:
        raise ModelLoadError(f"{source}: {name}={stated} but the weights hold tensors for {found} layers")
    if len(indices) != found:
        missing = min(set(range(found)) - indices)
        raise ModelLoadError(f"{source}: the file holds no tensors for layer {missing} of {found}")


def _largest_dimension(shapes: Iterable[tuple[int, ...]]) -> int:
    return max((int(n) for shape in shapes for n in shape), default=0)


def _check_sizes_fit(sizes: Mapping[str, Any], largest: int, source: str | Path) -> None:
    for name, size in sizes.items():
        if isinstance(size, int) and size > largest:
            raise ModelLoadError(
                f"{source}: {name}={size} is larger than any tensor dimension in the weights (largest: {largest})"
            )


def confined_file(folder: Path, name: Any, listed_in: Path) -> Path:
    """The file `name` (as a model folder's index lists it) inside `folder`; a
    ModelLoadError for an absolute path, a '..' part, or a symlink that leads outside.

    The one exception is the Hugging Face cache's layout, where `snapshots/<revision>/`
    holds symlinks into the repository's `blobs/` folder."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ModelLoadError(f"{listed_in}: names a weight file {shown(name)}, which is not a file name")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ModelLoadError(f"{listed_in}: names weight file {name!r}, outside the model folder {folder}")
    return inside_folder(folder, folder / relative, listed_in)


def inside_folder(folder: Path, path: Path, listed_in: Path) -> Path:
    """`path` if it resolves (symlinks followed) inside `folder` or, for a Hugging Face
    cache snapshot, inside its repository's blobs/; else a ModelLoadError."""
    root = folder.resolve()
    target = path.resolve()
    allowed = [root]
    if folder.parent.name == "snapshots":
        allowed.append((folder.parent.parent / "blobs").resolve())
    if not any(target == base or base in target.parents for base in allowed):
        raise ModelLoadError(f"{listed_in}: weight file {path.name!r} leads outside the model folder {folder} (to {target})")
    return path

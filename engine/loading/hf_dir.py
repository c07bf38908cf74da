"""Read a Hugging Face-layout model directory into a `Checkpoint`.

A directory holds `config.json`, `model.safetensors` (or shards with
`model.safetensors.index.json`), a tokenizer (`tokenizer.json` or `tokenizer.model`) with
`tokenizer_config.json`, optionally `chat_template.jinja` and `generation_config.json`
(whose eos ids win over config.json's, as in transformers' generate). The model store's
directories are of this same layout, or hold `delta.safetensors` (changes to a base model
in the same store, read together with it: engine/loading/delta.py) in place of the
weights. Other weight formats (.bin, .pt) are refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.config import ModelConfig
from engine.errors import ModelLoadError
from engine.loading.checkpoint import Checkpoint
from engine.loading.delta import DELTA_FILE, MAX_CHAIN, apply_delta, base_directory, is_delta_directory
from engine.loading.safetensors_files import read_tensors, tensor_shapes, weight_files
from engine.loading.tokenizer_files import read_json, read_tokenizer
from engine.loading.validation import check_against_tensors, check_config, check_hf_values, check_token_ids
from engine.models.registry import config_from_dict
from engine.text.tokenizer import Tokenizer

STORE_INFO_FILE = "chat_tui_model.json"


def read_hf_config(directory: Path) -> ModelConfig:
    """The directory's config (its values checked by engine/loading/validation.py), with
    generation_config.json's eos ids."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{directory}: no config.json, so this is not a model directory")
    raw = read_json(config_file)
    check_hf_values(raw, config_file)
    config = config_from_dict(raw, source=str(config_file))
    generation_file = directory / "generation_config.json"
    if generation_file.is_file():
        eos = read_json(generation_file).get("eos_token_id")
        check_token_ids(eos, "eos_token_id", generation_file)
        if eos is not None:
            config.eos_token_id = eos
    check_config(config, config_file)
    return config


def _fill_special_tokens(tokenizer: Tokenizer, config: ModelConfig) -> None:
    """Take bos/eos strings from the model config's ids when the tokenizer config lacks them."""
    if tokenizer.bos_token is None and isinstance(config.bos_token_id, int):
        tokenizer.bos_token = tokenizer.id_to_token(config.bos_token_id)
    if tokenizer.eos_token is None and config.eos_token_ids:
        tokenizer.eos_token = tokenizer.id_to_token(config.eos_token_ids[0])


def check_vocabulary(tokenizer: Tokenizer, config: ModelConfig, source: Path) -> None:
    """The tokenizer must not produce ids past the embedding table."""
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(
            f"{source}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {config.vocab_size}"
        )


def read_hf_directory(directory: Path, device: str = "cpu", dtype: torch.dtype | None = None,
                      _chain: tuple[Path, ...] = ()) -> Checkpoint:
    """Config, weights (cast to `dtype` while reading, if given), tokenizer and template.
    A model stored as changes to a base (engine/loading/delta.py) is read with its base."""
    config = read_hf_config(directory)
    info_file = directory / STORE_INFO_FILE
    info = read_json(info_file) if info_file.is_file() else {}
    is_delta = is_delta_directory(directory)
    files = [] if is_delta else weight_files(directory)
    if files:  # a delta's base is checked when it is read
        check_against_tensors(config, tensor_shapes(files), directory / "config.json")
    tokenizer, template = read_tokenizer(directory)
    _fill_special_tokens(tokenizer, config)
    check_vocabulary(tokenizer, config, directory)
    if is_delta:
        base_dir = base_directory(directory, info)
        if base_dir.resolve() in _chain or len(_chain) >= MAX_CHAIN:
            raise ModelLoadError(f"{directory}: its chain of base models loops back to {base_dir.name!r}")
        base = read_hf_directory(base_dir, device=device, dtype=dtype, _chain=(*_chain, directory.resolve()))
        delta = read_tensors([directory / DELTA_FILE], device=device)
        tensors = apply_delta(base.tensors, delta, directory / DELTA_FILE)
    else:
        tensors = read_tensors(files, device=device, dtype=dtype)
    for name in [n for n in tensors if n.endswith("rotary_emb.inv_freq")]:
        del tensors[name]  # older checkpoints saved this derived buffer; it is recomputed
    metadata = {"format": "hf"}
    if info_file.is_file():
        metadata["store"] = info
    return Checkpoint(config, tensors, tokenizer, template, directory, metadata)

"""Every size, count and ratio a model file states is checked before anything is built.

Each case damages one thing in a copy of a good tiny model (config.json, a safetensors
header, the sharded index, a GGUF key) and expects a one-line ModelLoadError naming the
file and the value, and an untouched store. The cases the issue lists also run through
`chat-tui models import` as a subprocess under a 3 GB address-space limit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFValueType as V

from cli_contract import assert_one_line_error, listing, run_cli
from engine.errors import ModelLoadError
from engine.export.gguf import export_gguf
from engine.loading import ModelStore, load_model
from engine.loading.validation import MAX_LAYERS
from malformed_models import (
    copy_model_dir,
    edit_config,
    read_safetensors_header,
    rewrite_gguf,
    write_safetensors_header,
)
from tiny_models import make_tiny_model_dir


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    directory = make_tiny_model_dir(root / "tiny")
    gguf = export_gguf(directory, root / "tiny.gguf", "f32")
    return {"dir": directory, "gguf": gguf}


def config_case(changes, *expected, file="config.json", names_file=True):
    def make(tmp: Path, good) -> tuple[Path, tuple[str, ...]]:
        directory = edit_config(copy_model_dir(good["dir"], tmp / "model"), changes, file=file)
        return directory, ((file,) if names_file else (str(directory),)) + expected

    make.__name__ = "config_" + "_".join(f"{k}" for k in changes)
    return make


def header_case(name, change, *expected):
    def make(tmp: Path, good) -> tuple[Path, tuple[str, ...]]:
        directory = copy_model_dir(good["dir"], tmp / "model")
        weights = directory / "model.safetensors"
        header, body = read_safetensors_header(weights)
        first = next(k for k in header if k != "__metadata__")
        change(header, first)
        write_safetensors_header(weights, header, body)
        return directory, ("model.safetensors", *expected)

    make.__name__ = "header_" + name
    return make


def gguf_case(name, changes, *expected, tensor_changes=None):
    def make(tmp: Path, good) -> tuple[Path, tuple[str, ...]]:
        path = rewrite_gguf(good["gguf"], tmp / "model.gguf", changes, tensor_changes)
        return path, ("model.gguf", *expected)

    make.__name__ = "gguf_" + name
    return make


def index_case(name, entry, *expected, link_to: str | None = None):
    """A sharded model whose index names `entry` for one of its tensors."""

    def make(tmp: Path, good) -> tuple[Path, tuple[str, ...]]:
        directory = copy_model_dir(good["dir"], tmp / "model")
        other = copy_model_dir(good["dir"], tmp / "other")
        header, _ = read_safetensors_header(directory / "model.safetensors")
        (directory / "model.safetensors").rename(directory / "shard-1.safetensors")
        names = [k for k in header if k != "__metadata__"]
        weight_map = {name: "shard-1.safetensors" for name in names}
        target = entry.replace("OTHER", str(other))
        weight_map[names[0]] = target
        if link_to is not None:
            os.symlink(link_to.replace("OTHER", str(other)), directory / target)
        (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        return directory, ("model.safetensors.index.json", *expected)

    make.__name__ = "index_" + name
    return make


def _drop_offsets(header, first):
    del header[first]["data_offsets"]


def _text_offsets(header, first):
    header[first]["data_offsets"] = ["0", "abc"]


def _negative_shape(header, first):
    header[first]["shape"] = [-1, 4]


def _entry_not_object(header, first):
    header[first] = "weights"


def _offsets_wrong_span(header, first):
    header[first]["data_offsets"] = [0, 4]


def _huge_shape(header, first):
    header[first]["shape"] = [2_000_000_000, 2_000_000_000]


ISSUE_CASES = [
    header_case("no_data_offsets", _drop_offsets, "data_offsets"),
    header_case("text_offsets", _text_offsets, "data_offsets", "'abc'"),
    config_case({"hidden_size": "abc"}, "hidden_size='abc'", "not an integer"),
    config_case({"vocab_size": None}, "vocab_size is null"),
    config_case({"rope_theta": 0}, "rope_theta=0"),
    config_case({"rope_scaling": {"rope_type": "linear", "factor": 0}}, "rope_scaling.factor=0"),
    config_case({"intermediate_size": -128}, "intermediate_size=-128", "out of range"),
    config_case({"head_dim": 2e9}, "head_dim=2000000000.0"),
    config_case({"num_hidden_layers": 1e8}, "num_hidden_layers=100000000.0"),
    gguf_case("key_length", {"llama.attention.key_length": (2_000_000_000, V.UINT32)},
              "llama.attention.key_length=2000000000"),
    gguf_case("block_count", {"llama.block_count": (100_000_000, V.UINT32)}, "llama.block_count=100000000"),
    index_case("parent_folder", "../other/model.safetensors", "'../other/model.safetensors'",
               "outside the model folder"),
    index_case("absolute_path", "OTHER/model.safetensors", "outside the model folder"),
    index_case("symlink_escape", "shard-2.safetensors", "'shard-2.safetensors' leads outside",
               link_to="OTHER/model.safetensors"),
]

MORE_CASES = [
    header_case("negative_shape", _negative_shape, "shape [-1, 4]"),
    header_case("entry_not_object", _entry_not_object, "'weights'"),
    header_case("offsets_wrong_span", _offsets_wrong_span, "offsets span 4"),
    header_case("huge_shape", _huge_shape, "2000000000"),
    config_case({"num_hidden_layers": 3}, "num_hidden_layers=3", "2 layers"),
    config_case({"num_hidden_layers": MAX_LAYERS + 1}, f"num_hidden_layers={MAX_LAYERS + 1}", "out of range"),
    config_case({"num_hidden_layers": True}, "num_hidden_layers=True"),
    config_case({"hidden_size": 64.5}, "hidden_size=64.5"),
    config_case({"vocab_size": 10**6}, "vocab_size=1000000", "model.embed_tokens.weight"),
    config_case({"num_attention_heads": 0}, "num_attention_heads=0"),
    config_case({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads=3"),
    config_case({"rms_norm_eps": float("nan")}, "rms_norm_eps=nan"),
    config_case({"rms_norm_eps": -1e-5}, "rms_norm_eps=-1e-05"),
    config_case({"rope_theta": "1e4"}, "rope_theta='1e4'", "not a number"),
    config_case({"rope_scaling": "linear"}, "rope_scaling='linear'"),
    config_case({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
                "low_freq_factor=4 must be below high_freq_factor=4"),
    config_case({"max_position_embeddings": 0}, "max_position_embeddings=0"),
    config_case({"tie_word_embeddings": "false"}, "tie_word_embeddings='false'"),
    config_case({"model_type": ["llama"]}, "model_type=['llama']"),
    config_case({"eos_token_id": 10**9}, "eos_token_id=1000000000", "outside the vocabulary"),
    config_case({"bos_token_id": "<s>"}, "bos_token_id='<s>'"),
    config_case({"eos_token_id": "x"}, "eos_token_id='x'", file="generation_config.json"),
    config_case({"head_dim": 32}, "q_proj.weight' has shape (64, 64), config implies (128, 64)",
                names_file=False),
    gguf_case("head_count_zero", {"llama.attention.head_count": (0, V.UINT32)}, "llama.attention.head_count=0"),
    gguf_case("context_text", {"llama.context_length": ("long", V.STRING)}, "llama.context_length='long'"),
    gguf_case("eps_nan", {"llama.attention.layer_norm_rms_epsilon": (float("nan"), V.FLOAT32)},
              "layer_norm_rms_epsilon=nan"),
    gguf_case("width_mismatch", {"llama.embedding_length": (32, V.UINT32)}, "embedding_length=32"),
    gguf_case("ffn_huge", {"llama.feed_forward_length": (200_000, V.UINT32)}, "feed_forward_length=200000"),
    gguf_case("rope_factor_zero", {"llama.rope.scaling.type": ("linear", V.STRING),
                                   "llama.rope.scaling.factor": (0.0, V.FLOAT32)}, "llama.rope.scaling.factor=0.0"),
    gguf_case("eos_negative", {"tokenizer.ggml.eos_token_id": (-5, V.INT32)}, "eos_token_id=-5"),
    gguf_case("per_layer_huge", {"llama.attention.head_count_kv": ([2, 10**9], V.ARRAY)},
              "head_count_kv=1000000000"),
    gguf_case("merges_not_text", {"tokenizer.ggml.merges": ([1, 2], V.ARRAY)}, "tokenizer.ggml.merges[0]=1"),
    gguf_case("merges_unknown_tokens", {"tokenizer.ggml.merges": (["zzq qqz"], V.ARRAY)},
              "merges do not fit tokenizer.ggml.tokens"),
    gguf_case("pre_not_text", {"tokenizer.ggml.pre": ([1], V.ARRAY)}, "tokenizer.ggml.pre=[1]"),
    index_case("not_a_name", "", "not a file name"),
]


def _check_library(make, tmp_path, good):
    path, expected = make(tmp_path, good)
    store = tmp_path / "store"
    with pytest.raises(ModelLoadError) as info:
        load_model(path, store_root=store)
    message = str(info.value)
    assert "\n" not in message, message
    for text in expected:
        assert text in message, (text, message)
    with pytest.raises(ModelLoadError):
        ModelStore(store).import_model(path, name="bad")
    assert listing(store) == []


@pytest.mark.parametrize("make", ISSUE_CASES + MORE_CASES, ids=lambda m: m.__name__)
def test_bad_value_is_a_one_line_error_naming_it(make, tmp_path, good):
    _check_library(make, tmp_path, good)


@pytest.mark.parametrize("make", ISSUE_CASES, ids=lambda m: m.__name__)
def test_models_import_refuses_in_one_line_under_a_memory_limit(make, tmp_path, good):
    path, expected = make(tmp_path, good)
    home = tmp_path / "home"
    result = run_cli("models", "import", str(path), "--name", "bad", home=home)
    assert_one_line_error(result, *expected)
    assert listing(home / "models") == []


def test_hugging_face_cache_symlinks_into_blobs_still_load(tmp_path, good):
    """The HF cache keeps files in blobs/ and links them from snapshots/<rev>/: allowed."""
    repo = tmp_path / "models--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for file in good["dir"].iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        blob.write_bytes(file.read_bytes())
        os.symlink(f"../../blobs/{blob.name}", snapshot / file.name)
    loaded = load_model(snapshot)
    assert loaded.config.num_hidden_layers == 2


def test_rope_divisors_of_zero_are_refused(tmp_path, good):
    """llama.cpp's rope_freqs tensor holds divisors; a zero would divide by zero."""
    path = rewrite_gguf(good["gguf"], tmp_path / "rope0.gguf", {},
                        extra_tensors={"rope_freqs.weight": np.zeros(8)})  # head_dim 16 / 2
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    assert "rope_freqs.weight holds 0.0" in str(info.value)


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json", "generation_config.json",
                                  "model.safetensors.index.json"])
def test_json_nested_past_the_parser_limit_is_one_line(file, tmp_path, good):
    directory = copy_model_dir(good["dir"], tmp_path / "model")
    (directory / file).write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ModelLoadError) as info:
        load_model(directory)
    assert file in str(info.value) and "nested too deeply" in str(info.value)


def test_good_files_still_load(good):
    assert load_model(good["dir"]).config.num_hidden_layers == 2
    assert load_model(good["gguf"]).config.num_hidden_layers == 2

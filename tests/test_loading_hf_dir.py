"""HF-layout directories written by transformers' save_pretrained load to the same logits."""

from __future__ import annotations

import json

import pytest
import torch

from engine.loading import load_model
from loading_helpers import MIXED_TEXT, tiny_hf_config, tiny_hf_model, write_hf_model_dir, write_sentencepiece_dir
from tiny_models import CHATML_TEMPLATE, write_bpe_dir

pytest.importorskip("transformers")


def _logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out)[0]


@pytest.mark.parametrize(
    "model_type,tie,extra",
    [
        ("llama", False, {}),
        ("llama", True, {}),
        ("mistral", False, {"sliding_window": None}),
        ("qwen2", True, {}),
        ("llama", False, {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 64}}),
    ],
    ids=["llama", "llama-tied", "mistral", "qwen2-tied", "llama3-rope"],
)
def test_directory_logits_match_transformers(tmp_path, bpe, model_type, tie, extra):
    source = tiny_hf_model(tiny_hf_config(model_type, vocab_size=400, tie=tie, **extra), seed=2)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_bpe_dir(d, bpe, CHATML_TEMPLATE))
    loaded = load_model(directory)
    ids = loaded.tokenizer.encode(MIXED_TEXT)[:60]
    diff = (_logits(source, ids) - _logits(loaded.model, ids)).abs().max().item()
    assert diff < 1e-4
    assert loaded.config.model_type == model_type
    assert (loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight) is tie
    assert not loaded.model.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in loaded.model.parameters())
    assert loaded.chat_template.source == CHATML_TEMPLATE
    assert loaded.stop_token_ids == [bpe.token_to_id("<|im_end|>")]  # also eos (2) here
    if "rope_parameters" in extra:
        assert loaded.config.rope_scaling["rope_type"] == "llama3"


def test_sharded_checkpoint_with_index(tmp_path, bpe):
    source = tiny_hf_model(tiny_hf_config(vocab_size=400), seed=4)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_bpe_dir(d, bpe), max_shard_size="100KB")
    assert (directory / "model.safetensors.index.json").is_file()
    assert len(list(directory.glob("model-*.safetensors"))) > 1
    loaded = load_model(directory)
    ids = [5, 17, 99, 250, 3]
    assert (_logits(source, ids) - _logits(loaded.model, ids)).abs().max().item() < 1e-4


def test_sentencepiece_directory(tmp_path, sp_model):
    source = tiny_hf_model(tiny_hf_config(vocab_size=400), seed=6)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_sentencepiece_dir(d, sp_model))
    loaded = load_model(directory)
    assert loaded.tokenizer.kind == "sentencepiece"
    ids = loaded.tokenizer.encode(MIXED_TEXT, add_special_tokens=True)
    assert ids[0] == 1
    assert (_logits(source, ids) - _logits(loaded.model, ids)).abs().max().item() < 1e-4
    assert loaded.chat_template.is_fallback  # no template in the directory


def test_chat_template_jinja_file_and_generation_config_eos(tmp_path, bpe):
    source = tiny_hf_model(tiny_hf_config(vocab_size=400), seed=7)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_bpe_dir(d, bpe, "{{ 'ignored' }}"))
    (directory / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    loaded = load_model(directory)
    assert loaded.chat_template.source == CHATML_TEMPLATE
    assert loaded.config.eos_token_ids == [2, 0]
    assert set(loaded.stop_token_ids) == {2, 0}


def test_dtype_option(tmp_path, bpe):
    source = tiny_hf_model(tiny_hf_config(vocab_size=400, tie=True), seed=8)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_bpe_dir(d, bpe))
    loaded = load_model(directory, dtype="bf16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    ids = [5, 17, 99]
    diff = (_logits(source, ids) - _logits(loaded.model, ids).float()).abs().max().item()
    assert diff < 0.1

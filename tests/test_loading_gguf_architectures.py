"""GGUF files of the qwen2, phi3 and gemma3 architectures, laid out as llama.cpp's converter
lays them out, load to the logits of the transformers model they were written from.

transformers reads every file too (its GGUF reader is independent of ours), so a file
that both read to the source's logits is laid out the way GGUF files in the wild are.
Export back to GGUF is checked the same way.
"""

from __future__ import annotations

import gguf
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from engine.export.gguf import export_gguf
from engine.loading import import_model, load_model
from engine.loading.gguf_file import read_gguf
from loading_helpers import gpt2_tokenizer_fields, tiny_hf_config, tiny_hf_model, train_byte_level_bpe, write_gguf
from tiny_models import TINY_GEMMA3, make_tiny_model_dir

transformers = pytest.importorskip("transformers")
TEXT = "Hello world! def add(a, b): return a + b 你好 😀 and some more words to pass the window"


@pytest.fixture(scope="module")
def bpe():
    return train_byte_level_bpe(vocab_size=400)


def _randomise(model, seed: int):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0.0, 0.08 if param.dim() == 2 else 0.2)
    return model.eval()


def phi3_source(vocab_size: int):
    config = transformers.Phi3Config(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    return _randomise(transformers.Phi3ForCausalLM(config), seed=2)


def gemma3_source(vocab_size: int):
    """As llama.cpp assumes a Gemma 3 is (every sixth layer global, local rope base 10000,
    scores scaled by 1/sqrt(head_dim)), with a window short enough to matter here."""
    config = transformers.Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=2,
        num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=4, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _randomise(transformers.Gemma3ForCausalLM(config), seed=3)


def sources(bpe):
    vocab = bpe.get_vocab_size()
    return {
        "qwen2": tiny_hf_model(tiny_hf_config("qwen2", vocab_size=vocab), seed=1),
        "phi3": phi3_source(vocab),
        "gemma3": gemma3_source(vocab),
    }


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out)[0]


def transformers_reading(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("architecture", ["qwen2", "phi3", "gemma3"])
def test_file_loads_to_the_source_logits_as_transformers_reads_it(tmp_path, bpe, architecture):
    source = sources(bpe)[architecture]
    path = write_gguf(tmp_path / f"{architecture}.gguf", source, Q.F32, gpt2_tokenizer_fields(bpe, pre="qwen2"),
                      architecture=architecture)
    loaded = load_model(path)
    ids = loaded.tokenizer.encode(TEXT)
    assert len(ids) > 8
    want = logits(source, ids)
    assert (logits(loaded.model, ids) - want).abs().max() < 1e-4
    assert (logits(transformers_reading(path), ids) - want).abs().max() < 1e-4  # the file is laid out as in the wild
    expected_type = {"qwen2": "qwen2", "phi3": "llama", "gemma3": "gemma3_text"}[architecture]
    assert loaded.config.model_type == expected_type
    assert loaded.metadata["gguf_architecture"] == architecture


def test_qwen2_file_keeps_its_biases_through_the_store(tmp_path, bpe):
    source = sources(bpe)["qwen2"]
    path = write_gguf(tmp_path / "qwen.gguf", source, Q.Q8_0, gpt2_tokenizer_fields(bpe, pre="qwen2"),
                      architecture="qwen2")
    checkpoint = read_gguf(path)
    assert checkpoint.config.qkv_bias and not checkpoint.config.o_bias
    assert torch.equal(checkpoint.tensors["model.layers.1.self_attn.k_proj.bias"],
                       source.state_dict()["model.layers.1.self_attn.k_proj.bias"])  # F32, not reordered
    stored = import_model(path, name="qwen", store_root=tmp_path / "store")
    ids = load_model(path).tokenizer.encode(TEXT)
    assert torch.equal(logits(load_model(path).model, ids), logits(load_model(stored).model, ids))


def test_a_llama_file_with_only_qkv_biases_becomes_qwen2_so_the_store_keeps_them(tmp_path, bpe):
    """A Qwen2 written under the llama architecture (older exports did) has q/k/v biases
    and no output bias; as a "llama" model its stored config could not say so."""
    source = sources(bpe)["qwen2"]
    path = write_gguf(tmp_path / "as-llama.gguf", source, Q.F32, gpt2_tokenizer_fields(bpe), architecture="llama")
    stored = import_model(path, name="as-llama", store_root=tmp_path / "store")
    reloaded = load_model(stored)
    assert reloaded.config.model_type == "qwen2"
    ids = reloaded.tokenizer.encode(TEXT)
    assert (logits(reloaded.model, ids) - logits(source, ids)).abs().max() < 1e-4


def test_gemma3_specifics_come_from_llama_cpps_assumptions(tmp_path, bpe):
    source = sources(bpe)["gemma3"]
    path = write_gguf(tmp_path / "g.gguf", source, Q.F32, gpt2_tokenizer_fields(bpe), architecture="gemma3")
    config = read_gguf(path).config
    assert config.layer_types == source.config.layer_types  # five local layers, then a global one
    assert (config.sliding_window, config.rope_local_base_freq, config.query_pre_attn_scalar) == (4, 10000.0, 256.0)
    assert config.tie_word_embeddings
    fields = {t.name: t for t in gguf.GGUFReader(path).tensors}
    norm = fields["blk.0.attn_q_norm.weight"].data
    assert torch.allclose(torch.from_numpy(norm.copy()) - 1, source.model.layers[0].self_attn.q_norm.weight, atol=1e-6)


@pytest.mark.parametrize("model_type, architecture", [("qwen2", "qwen2"), ("gemma3_text", "gemma3")])
def test_export_is_the_architecture_llama_cpp_uses_and_reads_back(tmp_path, model_type, architecture):
    source = make_tiny_model_dir(tmp_path / "source", model_type=model_type)
    want_model = load_model(source)
    ids = want_model.tokenizer.encode(TEXT)
    want = logits(want_model.model, ids)
    out = export_gguf(source, tmp_path / "out.gguf", "f32")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items()}
    assert fields["general.architecture"] == architecture
    back = load_model(out)
    assert back.config.model_type == model_type
    assert (logits(back.model, ids) - want).abs().max() < 1e-5
    if model_type == "gemma3_text":
        # This tiny Gemma differs from llama.cpp's assumptions; the file says how.
        assert fields["gemma3.attention.sliding_window_pattern"] == [True, False]
        assert fields["gemma3.rope.freq_base_swa"] == TINY_GEMMA3["rope_local_base_freq"]
        assert back.config.query_pre_attn_scalar == pytest.approx(TINY_GEMMA3["query_pre_attn_scalar"])
    else:
        assert (logits(transformers_reading(out), ids) - want).abs().max() < 1e-4


def test_export_of_a_standard_gemma3_reads_in_transformers(tmp_path, bpe):
    gguf_path = write_gguf(tmp_path / "g.gguf", sources(bpe)["gemma3"], Q.F32, gpt2_tokenizer_fields(bpe),
                           architecture="gemma3")
    stored = import_model(gguf_path, name="g", store_root=tmp_path / "store")
    out = export_gguf(stored, tmp_path / "again.gguf", "f32")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items()}
    assert "gemma3.attention.sliding_window_pattern" not in fields  # llama.cpp's own assumption holds
    ids = load_model(stored).tokenizer.encode(TEXT)
    want = logits(load_model(stored).model, ids)
    assert (logits(transformers_reading(out), ids) - want).abs().max() < 1e-4


def test_what_the_decoder_cannot_run_is_refused_naming_the_file(tmp_path, bpe):
    import numpy as np

    from engine.errors import ModelLoadError

    factors = {"rope_factors_long.weight": (np.ones(8, dtype=np.float32), None)}
    path = write_gguf(tmp_path / "phi3-128k.gguf", sources(bpe)["phi3"], Q.F32, gpt2_tokenizer_fields(bpe),
                      architecture="phi3", extra_tensors=factors)
    with pytest.raises(ModelLoadError, match=r"phi3-128k\.gguf: long-context rope factors \(LongRoPE\)"):
        read_gguf(path)
    split = tmp_path / "model-00001-of-00002.gguf"
    writer = gguf.GGUFWriter(str(split), "qwen2")
    writer.add_uint16("split.count", 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match=r"model-00001-of-00002\.gguf: one part of a GGUF file split in 2"):
        read_gguf(split)

"""GGUF export: files load back through our GGUF loader with the source's logits, the
Q/K reordering is what llama.cpp's rotary layout needs, and unexportable models or bad
options fail cleanly without leaving files behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import sentencepiece as spm
import torch

from engine.errors import EngineError
from engine.export.gguf import ExportError, export_gguf
from engine.loading import load_model
from engine.loading.gguf_names import gguf_tensor_name, hf_tensor_name, permute_qk
from tiny_models import TRAINING_TEXT, make_tiny_model_dir

PROMPT = "Hello! How are you today? The quick brown fox 12345."


def logits_of(model_path: Path, text: str = PROMPT) -> tuple[torch.Tensor, list[int]]:
    loaded = load_model(model_path)
    ids = loaded.tokenizer.encode(text, add_special_tokens=True)
    with torch.no_grad():
        return loaded.model(torch.tensor([ids]))[0], ids


def fields_of(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items()}


@pytest.mark.parametrize(
    "export_type, tolerance",
    [("f32", 1e-5), ("f16", 1e-2), ("q8_0", 5e-2)],  # q8_0: 8-bit blocks of 32, about 0.4% per weight
)
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_logits_match(tmp_path, export_type, tolerance, tied):
    source = make_tiny_model_dir(tmp_path / "tiny", tie_word_embeddings=tied)
    want, ids = logits_of(source)
    out = export_gguf(source, tmp_path / "tiny.gguf", export_type)
    got, got_ids = logits_of(out)
    assert got_ids == ids  # the tokenizer survived as GGUF metadata
    assert (got - want).abs().max() < tolerance
    if export_type != "q8_0":  # quantization may flip near-ties of a random model
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    fields = fields_of(out)
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt2"
    assert fields["tokenizer.chat_template"] == json.loads((source / "tokenizer_config.json").read_text())["chat_template"]
    names = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert ("output.weight" in names) is not tied
    assert names["blk.0.attn_norm.weight"] == "F32"
    assert names["blk.0.attn_q.weight"] == {"f32": "F32", "f16": "F16", "q8_0": "Q8_0"}[export_type]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_q8_0_file_holds_exactly_the_quantized_weights(tmp_path):
    """The q8_0 file's logits are those of the source with each matrix put through Q8_0
    (quantize, dequantize) and nothing else changed: the export adds no error of its own."""
    from gguf import GGMLQuantizationType
    from gguf import quants

    source = make_tiny_model_dir(tmp_path / "tiny", hidden_size=64)
    loaded = load_model(source)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if param.dim() == 2:
                q8 = quants.quantize(param.numpy(), GGMLQuantizationType.Q8_0)
                param.copy_(torch.from_numpy(quants.dequantize(q8, GGMLQuantizationType.Q8_0)))
        ids = loaded.tokenizer.encode(PROMPT)
        want = loaded.model(torch.tensor([ids]))[0]
    got, _ = logits_of(export_gguf(source, tmp_path / "tiny.gguf", "q8_0"))
    assert (got - want).abs().max() < 1e-5


def test_qwen2_biases_export(tmp_path):
    source = make_tiny_model_dir(tmp_path / "qwen", model_type="qwen2")
    want, _ = logits_of(source)
    got, _ = logits_of(export_gguf(source, tmp_path / "qwen.gguf", "f32"))
    assert (got - want).abs().max() < 1e-5


def _sentencepiece_model_dir(tmp_path: Path) -> Path:
    """A tiny Llama-2-style directory: sentencepiece tokenizer.model, <s>/</s>, [INST] template."""
    source = make_tiny_model_dir(tmp_path / "spm", seed=3)
    (source / "tokenizer.json").unlink()
    model = tmp_path / "spm.model"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines()), model_prefix=str(model.with_suffix("")),
        vocab_size=340, model_type="bpe", byte_fallback=True, minloglevel=2,
    )
    (source / "tokenizer.model").write_bytes(model.read_bytes())
    config = json.loads((source / "config.json").read_text())
    config.update(bos_token_id=1, eos_token_id=2)  # embedding rows past 340 stay unused
    (source / "config.json").write_text(json.dumps(config))
    template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    (source / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "chat_template": template,
    }))
    return source


def test_sentencepiece_tokenizer_exports_as_llama_vocabulary(tmp_path):
    source = _sentencepiece_model_dir(tmp_path)
    want, ids = logits_of(source)
    assert ids[0] == 1  # add_bos_token
    out = export_gguf(source, tmp_path / "spm.gguf", "f16")
    got, got_ids = logits_of(out)
    assert got_ids == ids
    assert (got - want).abs().max() < 1e-2
    fields = fields_of(out)
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.tokens"][3] == "<0x00>" and fields["tokenizer.ggml.token_type"][3] == 6  # byte piece
    assert len(fields["tokenizer.ggml.tokens"]) == json.loads((source / "config.json").read_text())["vocab_size"]
    assert fields["tokenizer.ggml.tokens"][-1].startswith("[PAD")


def test_query_key_order_matches_llama_cpp_rotary():
    """HF rotates dimension i with i + D/2; llama.cpp's rope rotates 2i with 2i+1. After
    the export's row reordering, llama.cpp's rotation of the reordered projection must
    be HF's rotation of the original one, with dimensions interleaved."""
    torch.manual_seed(0)
    heads, head_dim, d, position, base = 3, 8, 16, 7, 10000.0
    weight = torch.randn(heads * head_dim, d, dtype=torch.float64)
    x = torch.randn(d, dtype=torch.float64)
    half = head_dim // 2
    angles = [position * base ** (-2 * i / head_dim) for i in range(half)]

    hf = (weight @ x).view(heads, head_dim)
    hf_rotated = torch.empty_like(hf)
    for i, angle in enumerate(angles):
        a, b = hf[:, i], hf[:, i + half]
        hf_rotated[:, i] = a * math.cos(angle) - b * math.sin(angle)
        hf_rotated[:, i + half] = b * math.cos(angle) + a * math.sin(angle)

    reordered = torch.from_numpy(permute_qk(weight.numpy(), heads))
    ggml = (reordered @ x).view(heads, head_dim)
    ggml_rotated = torch.empty_like(ggml)
    for i, angle in enumerate(angles):
        a, b = ggml[:, 2 * i], ggml[:, 2 * i + 1]
        ggml_rotated[:, 2 * i] = a * math.cos(angle) - b * math.sin(angle)
        ggml_rotated[:, 2 * i + 1] = b * math.cos(angle) + a * math.sin(angle)

    interleaved = torch.stack([hf_rotated[:, :half], hf_rotated[:, half:]], dim=-1).reshape(heads, head_dim)
    assert torch.allclose(ggml_rotated, interleaved)


def test_palm_is_refused_and_nothing_written(tmp_path):
    from engine.models.palm import palm_config, palm_config_to_dict

    source = tmp_path / "palm-model"
    source.mkdir()
    config = palm_config(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    (source / "config.json").write_text(json.dumps(palm_config_to_dict(config)))
    out = tmp_path / "out" / "palm.gguf"
    out.parent.mkdir()
    with pytest.raises(ExportError, match="'palm' model cannot be exported to GGUF") as error:
        export_gguf(source, out, "f16")
    assert "\n" not in str(error.value)
    assert list(out.parent.iterdir()) == []


def test_bad_options(tmp_path):
    source = make_tiny_model_dir(tmp_path / "tiny")
    with pytest.raises(ExportError, match="GGUF type 'q4_k'"):
        export_gguf(source, tmp_path / "x.gguf", "q4_k")
    with pytest.raises(ExportError, match="does not exist"):
        export_gguf(source, tmp_path / "missing" / "x.gguf")
    with pytest.raises(EngineError, match="no config.json"):
        export_gguf(tmp_path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    source = make_tiny_model_dir(tmp_path / "tiny")
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    with pytest.raises(OSError):
        export_gguf(source, out_dir / "tiny.gguf")
    assert list(out_dir.iterdir()) == []


def test_tensor_names_are_llama_cpps_both_ways():
    # Written out from llama.cpp's tensor names, not from the table under test.
    pairs = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
        "model.layers.11.mlp.down_proj.weight": "blk.11.ffn_down.weight",
        "model.layers.0.self_attn.q_proj.bias": "blk.0.attn_q.bias",
        "model.layers.3.post_attention_layernorm.weight": "blk.3.ffn_norm.weight",
    }
    for hf, gguf_name in pairs.items():
        assert gguf_tensor_name(hf) == gguf_name and hf_tensor_name(gguf_name) == hf
    assert gguf_tensor_name("model.layers.0.norm.weight") is None  # PaLM's block norm has no place
    assert hf_tensor_name("blk.0.attn_qkv.weight") is None


def test_a_weight_without_a_gguf_name_is_refused_and_nothing_written(tmp_path):
    from safetensors.torch import load_file, save_file

    source = make_tiny_model_dir(tmp_path / "tiny")
    weights = load_file(source / "model.safetensors")
    weights["model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(weights, source / "model.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match="'model.layers.0.extra.weight' has no llama-architecture GGUF tensor name"):
        export_gguf(source, out / "tiny.gguf")
    assert list(out.iterdir()) == []


@pytest.mark.default_model
@pytest.mark.slow
def test_default_model_round_trip(tmp_path):
    from chat_tui.paths import models_dir
    from engine.loading import ensure_default_model

    source = ensure_default_model(models_dir())
    want, ids = logits_of(source, "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")
    out = export_gguf(source, tmp_path / "smollm.gguf", "f16")
    got, got_ids = logits_of(out, "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")
    assert got_ids == ids
    # f16 storage of 135M weights: measured max |logit diff| 0.041 over logits in -31..38, top-1 all equal.
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert (got - want).abs().max() < 0.1
    fields = fields_of(out)
    assert fields["tokenizer.ggml.pre"] == "smollm"
    assert np.isclose(fields["llama.rope.freq_base"], 100000.0)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    import sys

    from chat_tui.cli import main

    monkeypatch.setattr(sys, "argv", ["chat-tui", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_exports_a_recorded_version_and_refuses_palm(tmp_path, monkeypatch, capsys):
    from feedback import Store

    from chat_tui.paths import database_path, ensure_data_dir

    ensure_data_dir()
    source = make_tiny_model_dir(tmp_path / "tiny")
    Store(database_path()).register_model_version("tuned-1", str(source), source="train")
    out = tmp_path / "tuned.gguf"
    code, stdout, err = run_cli(monkeypatch, capsys, "models", "export", "tuned-1", "--type", "q8_0", "-o", str(out))
    assert code == 0, err
    assert f"Wrote {out} (q8_0" in stdout
    assert fields_of(out)["general.file_type"] == 7  # llama.cpp's MOSTLY_Q8_0

    palm_dir = tmp_path / "palm-model"
    palm_dir.mkdir()
    from engine.models.palm import palm_config, palm_config_to_dict

    config = palm_config(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    (palm_dir / "config.json").write_text(json.dumps(palm_config_to_dict(config)))
    code, _, err = run_cli(monkeypatch, capsys, "models", "export", str(palm_dir), "-o", str(tmp_path / "p.gguf"))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("Error: palm-model: a 'palm' model cannot be exported to GGUF")
    assert not (tmp_path / "p.gguf").exists()

    code, _, err = run_cli(monkeypatch, capsys, "models", "export", "no-such-model", "-o", str(tmp_path / "n.gguf"))
    assert code == 1 and "'no-such-model' is not a model in the store" in err

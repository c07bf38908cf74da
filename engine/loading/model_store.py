"""The model store: a folder of ordinary HF-layout model directories, one per model.

Each entry `ROOT/NAME/` holds config.json, model.safetensors, the tokenizer
(tokenizer.json or tokenizer.model), tokenizer_config.json with special tokens and the chat
template, chat_template.jinja, and `chat_tui_model.json` (where the model came from and
when). A trained model saved with its base holds `delta.safetensors` instead of the
weights: only what changed (engine/loading/delta.py); its base cannot be removed while
it is there. A model is written into a hidden temporary folder beside its final place and
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
from engine.loading.delta import DELTA_FILE, LowRank, apply_delta, is_delta_directory, split_delta
from engine.loading.gguf_file import read_gguf
from engine.loading.hf_dir import STORE_INFO_FILE, read_hf_directory
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
        """What its own folder holds (a delta's base not included)."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    @property
    def base(self) -> str | None:
        """The store name of the model it is stored as changes to, or None when whole."""
        return self.info.get("base") if is_delta_directory(self.path) else None


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
        """Copy a model directory or GGUF file into the store as an HF-layout directory."""
        source = Path(path).expanduser()
        checkpoint = read_checkpoint(source)
        check_tensors(checkpoint.config, checkpoint.tensors, source)
        if name is None:
            name = re.sub(r"[^A-Za-z0-9._+-]", "-", source.stem if source.is_file() else source.resolve().name)
        info = {
            "source": checkpoint.metadata.get("format", "hf"),
            "imported_from": str(source.resolve()),
        }
        return self.write(checkpoint, name, info)

    def save_model(
        self,
        model: "LoadedModel | Checkpoint",
        name: str,
        source: str = "trained",
        info: dict[str, Any] | None = None,
        state_dict: dict[str, Any] | None = None,
        base: str | Path | None = None,
        low_rank: dict[str, LowRank] | None = None,
    ) -> Path:
        """Write a model (e.g. a trainer's new version) into the store under `name`.

        state_dict: weights to write instead of the model's own (e.g. with a LoRA adapter
            merged in); config, tokenizer and chat template still come from `model`. A tied
            LM head in it is left out, as `stored_tensors` says.
        base: the model it was trained from (a store name, or its store folder): it is then
            stored as the tensors that differ from the base's plus `low_rank` updates
            (engine/loading/delta.py), not whole. A base outside the store cannot be
            referred to, so the model is then stored whole with its updates folded in.
        low_rank: HF weight name -> (b, a): an update b @ a on top of `state_dict`'s weight
            (a LoRA adapter, its scale folded into b).
        """
        if state_dict is None:
            state_dict = model.tensors if isinstance(model, Checkpoint) else model.model.state_dict()
        tensors = stored_tensors(state_dict, model.config)
        base_name = self._base_name(base)
        if base_name is None and low_rank:
            tensors = apply_delta(dict(tensors), _factors(low_rank), Path(name))
            low_rank = None
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
        if base_name is None:
            return self.write(checkpoint, name, {"source": source, **(info or {})})
        base_dir = self.path_of(base_name)
        base_tensors = read_hf_directory(base_dir).tensors
        delta = split_delta(checkpoint.tensors, base_tensors, low_rank)
        # What a reader will rebuild must be a whole model of this config.
        check_tensors(checkpoint.config, apply_delta(base_tensors, delta, Path(name)), Path(name))
        base_info = json.loads((base_dir / STORE_INFO_FILE).read_text(encoding="utf-8"))
        info = {"source": source, **(info or {}), "base": base_name, "base_created_at": base_info.get("created_at")}
        return self.write(replace(checkpoint, tensors=delta), name, info, is_delta=True)

    def _base_name(self, base: str | Path | None) -> str | None:
        """The store name of `base` when it is a complete model in this store, else None."""
        if base is None:
            return None
        if isinstance(base, Path) or os.sep in str(base):
            path = Path(base).expanduser().resolve()
            if path.parent != self.root.resolve():
                return None
            base = path.name
        return base if self.has(base) else None

    def dependents(self, name: str) -> list[str]:
        """The stored models kept as changes to `name` (each needs it to load)."""
        return [m.name for m in self.list_models() if m.base == name]

    def remove(self, name: str) -> int:
        """Delete model `name` from the store; returns the bytes freed. Refused while
        another model is stored as changes to it."""
        if not self.has(name):
            raise ModelLoadError(f"{name!r} is not a model in the store")
        dependents = self.dependents(name)
        if dependents:
            raise ModelLoadError(
                f"{name!r} is the base of {', '.join(repr(d) for d in dependents)} (stored as changes to it); "
                f"remove {'that' if len(dependents) == 1 else 'those'} first"
            )
        path = self.path_of(name)
        size = StoredModel(name, path, {}).size_bytes
        # Renamed away first, so a crash half way never leaves a half-deleted model listed.
        doomed = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".removed", dir=self.root))
        os.rename(path, doomed / name)
        shutil.rmtree(doomed, ignore_errors=True)
        return size

    def write(self, checkpoint: Checkpoint, name: str, info: dict[str, Any], is_delta: bool = False) -> Path:
        """Write `checkpoint` as ROOT/name, atomically; refuses to replace an existing model.
        is_delta: its tensors are a delta on `info["base"]`, written as delta.safetensors."""
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
            self._write_files(checkpoint, staging, {"name": name, **info}, is_delta)
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
    def _write_files(checkpoint: Checkpoint, directory: Path, info: dict[str, Any], is_delta: bool = False) -> None:
        config = config_to_dict(checkpoint.config)
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_tensors(checkpoint.tensors, directory / (DELTA_FILE if is_delta else SINGLE_FILE))
        template = checkpoint.chat_template
        checkpoint.tokenizer.save(directory, extra_config={"chat_template": template} if template else None)
        if template:
            (directory / "chat_template.jinja").write_text(template, encoding="utf-8")
        info = {**info, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "format_version": 1}
        (directory / STORE_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _factors(low_rank: dict[str, LowRank]) -> dict[str, Any]:
    """Low-rank updates in the delta file's naming, for apply_delta."""
    return split_delta({}, {}, low_rank)

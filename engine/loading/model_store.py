"""The model store: a folder of ordinary HF-layout model directories, one per model.

Models come in as HF-layout directories, GGUF files, or models of Ollama's store
(`ollama:NAME[:TAG]`, found by engine/loading/ollama.py). Each entry `ROOT/NAME/` holds
config.json, model.safetensors, the tokenizer (tokenizer.json or tokenizer.model),
tokenizer_config.json with special tokens and the chat template, chat_template.jinja, and
`chat_tui_model.json` (where the model came from and when). A trained model saved with
its base holds `delta.safetensors` instead of the weights: only what changed
(engine/loading/delta.py); its base cannot be removed while it is there. A model is
written into a hidden staging folder beside its final place (`.NAME.PID-XXXX.partial`,
PID the writing process) and renamed there only when complete, so the store never shows
a half-written model. A staging folder whose process is gone (killed mid-import) is
abandoned: the next write removes it, as does `remove_abandoned_staging` (the app's start
and `chat-tui clean` call it).

The store does not decide where ROOT is: every caller passes it (the app and the CLI
pass the model folder of their data directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelLoadError, write_error
from engine.loading.checkpoint import Checkpoint, check_tensors, stored_tensors
from engine.loading.delta import DELTA_FILE, LowRank, apply_delta, is_delta_directory, split_delta
from engine.loading.gguf_config import config_from_gguf
from engine.loading.gguf_file import open_gguf, read_gguf
from engine.loading.gguf_file import tensor_shapes as gguf_tensor_shapes
from engine.loading.hf_dir import STORE_INFO_FILE, read_hf_config, read_hf_directory
from engine.loading.ollama import find_model, is_ollama_reference, stop_token_ids
from engine.loading.safetensors_files import SINGLE_FILE, tensor_shapes, weight_files, write_tensors
from engine.loading.validation import check_against_tensors, check_config, check_gguf_metadata
from engine.models.registry import config_to_dict

if TYPE_CHECKING:
    from engine.bundle import LoadedModel

VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
GGUF_MAGIC = b"GGUF"
STAGING_SUFFIX = ".partial"
_STAGING_OWNER = re.compile(r"\.(\d+)-[a-z0-9_]+\.partial$")
# A staging folder that names no process (written before folders carried one) is taken to
# be abandoned once nothing in it has changed for this long.
STALE_STAGING_SECONDS = 10 * 60


def staging_prefix(name: str) -> str:
    """The start of a staging folder's name for model `name`: hidden, with our process id."""
    return f".{name}.{os.getpid()}-"


def process_exists(pid: int) -> bool:
    """Whether a process with this id is running (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (0 for what vanished meanwhile)."""
    total = 0
    for file in path.rglob("*"):
        try:
            total += file.lstat().st_size if file.is_file() else 0
        except OSError:
            pass
    return total


def is_abandoned_staging(entry: Path, now: float | None = None) -> bool:
    """Whether `entry` is a staging folder no process will finish: its writer is gone, or
    (for a folder that names none) nothing in it changed for STALE_STAGING_SECONDS."""
    if not (entry.name.startswith(".") and entry.name.endswith(STAGING_SUFFIX) and entry.is_dir()):
        return False
    owner = _STAGING_OWNER.search(entry.name)
    if owner is not None:
        return not process_exists(int(owner.group(1)))
    try:
        changed = max([entry.stat().st_mtime] + [f.stat().st_mtime for f in entry.iterdir()])
    except OSError:
        return False
    return (now if now is not None else time.time()) - changed > STALE_STAGING_SECONDS


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


def check_model(path: str | Path) -> Path:
    """`path` (made absolute) if it holds a model this runtime can load, judged from its
    config and tensor headers without reading any weights; else a ModelLoadError."""
    found = existing_path(path).resolve()
    if found.is_dir():
        config = read_hf_config(found)
        if not is_delta_directory(found):  # a delta's base is checked when it is read
            check_against_tensors(config, tensor_shapes(weight_files(found)), found / "config.json")
    elif is_gguf_file(found):
        file = open_gguf(found)
        check_gguf_metadata(file.fields, gguf_tensor_shapes(file), found)
        check_config(config_from_gguf(file.fields, {t.name for t in file.tensors}, found, None), found)
    else:
        raise ModelLoadError(f"{found}: not a model directory or a .gguf file")
    return found


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

    def abandoned_staging(self) -> list[Path]:
        """Staging folders of imports whose process is gone (see the module docstring)."""
        if not self.root.is_dir():
            return []
        return [entry for entry in sorted(self.root.iterdir()) if is_abandoned_staging(entry)]

    def remove_abandoned_staging(self) -> list[tuple[Path, int]]:
        """Delete the abandoned staging folders; returns each with the bytes it held."""
        removed = []
        for entry in self.abandoned_staging():
            size = folder_size(entry)
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append((entry, size))
        return removed

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
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.remove_abandoned_staging()
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(name), suffix=STAGING_SUFFIX, dir=self.root))
        except OSError as exc:  # a read-only or full disk: said of the model's place in the store
            raise write_error(exc, final) from None
        try:
            self._write_files(checkpoint, staging, {"name": name, **info}, is_delta)
            try:
                os.rename(staging, final)
            except OSError:
                if (final / STORE_INFO_FILE).is_file():  # another process finished the same import first
                    raise ModelLoadError(f"a model named {name!r} is already in the store ({final})") from None
                raise
        except OSError as exc:
            raise write_error(exc, final) from None
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

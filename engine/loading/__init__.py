"""Loading models: HF-layout directories, GGUF files, the model store, the default model.

`load_model` is the one entry point the engine, the app and the trainer use. It takes a
store name, a model directory or a .gguf file (None or "default" for the default model)
and returns a `LoadedModel` on the requested device. `import_model` copies a directory, a
GGUF file or a model of Ollama's store (`ollama:NAME[:TAG]`) into the store; `save_model`
writes a trained one, whole or (given its base) as the changes to that base
(engine/loading/delta.py); `discover` (engine/loading/discover.py) finds the models
already on the machine. Every failure a user can cause is a one-line `ModelLoadError`
naming the file and what is wrong with it; every size and count a file states is checked
(validation.py) before anything is built from it.

The engine does not know where the store is: a caller that names a stored model (or the
default one) passes the store's folder as `store_root`; a path needs none.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.bundle import LoadedModel
from engine.devices import resolve_device
from engine.errors import ModelLoadError
from engine.loading.checkpoint import Checkpoint, build_model, resolve_dtype
from engine.loading.default_model import DEFAULT_MODEL_NAME, INSTALL_COMMAND, ensure_default_model
from engine.loading.gguf_file import read_gguf
from engine.loading.hf_dir import read_hf_directory
from engine.loading.model_store import ModelStore, StoredModel, existing_path, is_gguf_file, names_a_path

__all__ = [
    "DEFAULT_MODEL_NAME",
    "INSTALL_COMMAND",
    "Checkpoint",
    "ModelLoadError",
    "ModelStore",
    "StoredModel",
    "ensure_default_model",
    "import_model",
    "load_model",
    "save_model",
]


def load_model(
    path_or_name: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    store_root: str | Path | None = None,
) -> LoadedModel:
    """A ready-to-run model.

    path_or_name: a name in the model store, a model directory, a .gguf file, or
        None / "default" for the default model (imported into the store on first use).
    device: a torch device or a name for one ("auto": the GPU when there is one); a
        device this machine lacks is a DeviceError before anything is read.
    dtype: default float32 on CPU, bfloat16 on GPUs.
    store_root: the model store's folder; needed for a store name or the default model
        (without it they are a ValueError: the caller's mistake, not the user's).
    """
    device = resolve_device(device)
    store = ModelStore(store_root) if store_root is not None else None
    path = _model_path(path_or_name, store)
    target = resolve_dtype(dtype, device)
    if path.is_dir():
        checkpoint = read_hf_directory(path, device=str(device), dtype=target)
    elif is_gguf_file(path):
        checkpoint = read_gguf(path)
    else:
        raise ModelLoadError(f"{path}: not a model directory or a .gguf file")
    in_store = store is not None and path.parent == store.root
    name = path.name if path.is_dir() else path.stem
    model = build_model(checkpoint, device=device, dtype=target, name=name)
    if in_store:
        model.metadata["store_name"] = name
    return model


def _model_path(path_or_name: str | Path | None, store: ModelStore | None) -> Path:
    """Where the model `load_model` was asked for is: a path as given, else in the store."""
    is_default = path_or_name is None or path_or_name == "default"
    if store is not None:
        return ensure_default_model(store.root) if is_default else store.resolve(path_or_name)
    if is_default or not names_a_path(path_or_name):
        raise ValueError(f"load_model({path_or_name!r}) names a model in the store: pass store_root")
    return existing_path(path_or_name)


def import_model(path: str | Path, name: str | None = None, *, store_root: str | Path) -> Path:
    """Copy a model directory, GGUF file or `ollama:NAME[:TAG]` into the store at
    `store_root`; returns its store directory."""
    return ModelStore(store_root).import_model(path, name=name)


def save_model(
    model: LoadedModel | Checkpoint,
    name: str,
    *,
    store_root: str | Path,
    source: str = "trained",
    info: dict | None = None,
    state_dict: dict | None = None,
    base: str | Path | None = None,
    low_rank: dict | None = None,
) -> Path:
    """Write a model into the store at `store_root` as a new directory (see
    `ModelStore.save_model`)."""
    return ModelStore(store_root).save_model(model, name, source=source, info=info, state_dict=state_dict, base=base,
                                             low_rank=low_rank)

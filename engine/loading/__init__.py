"""Loading models: HF-layout directories, GGUF files, the model store, the default model.

`load_model` is the one entry point the engine, the app and the trainer use. It takes a
store name, a model directory or a .gguf file (None or "default" for the default model)
and returns a `LoadedModel` on the requested device. `import_model` copies a directory or
GGUF file into the store. Every failure a user can cause is a one-line `ModelLoadError`
naming the file and what is wrong with it.
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
from engine.loading.model_store import ModelStore, StoredModel, default_store_root, is_gguf_file

__all__ = [
    "DEFAULT_MODEL_NAME",
    "INSTALL_COMMAND",
    "Checkpoint",
    "ModelLoadError",
    "ModelStore",
    "StoredModel",
    "default_store_root",
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
    store_root: the model store's folder; default: chat-tui's data directory.
    """
    device = resolve_device(device)
    store = ModelStore(store_root if store_root is not None else default_store_root())
    if path_or_name is None or path_or_name == "default":
        path = ensure_default_model(store.root)
    else:
        path = store.resolve(path_or_name)
    target = resolve_dtype(dtype, device)
    if path.is_dir():
        checkpoint = read_hf_directory(path, device=str(device), dtype=target)
    elif is_gguf_file(path):
        checkpoint = read_gguf(path)
    else:
        raise ModelLoadError(f"{path}: not a model directory or a .gguf file")
    in_store = path.parent == store.root
    name = path.name if path.is_dir() else path.stem
    model = build_model(checkpoint, device=device, dtype=target, name=name)
    if in_store:
        model.metadata["store_name"] = name
    return model


def import_model(path: str | Path, name: str | None = None, store_root: str | Path | None = None) -> Path:
    """Copy a model directory or GGUF file into the store; returns its store directory."""
    store = ModelStore(store_root if store_root is not None else default_store_root())
    return store.import_model(path, name=name)


def save_model(
    model: LoadedModel | Checkpoint,
    name: str,
    store_root: str | Path | None = None,
    source: str = "trained",
    info: dict | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Write a model into the store as a new directory (see `ModelStore.save_model`)."""
    store = ModelStore(store_root if store_root is not None else default_store_root())
    return store.save_model(model, name, source=source, info=info, state_dict=state_dict)

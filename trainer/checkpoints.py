"""Checkpoints of a training run, so that an interrupted run resumes where it stopped.

A run's folder (`<data dir>/training/run-<id>/`) holds `state.json` (the settings, the
feedback snapshot, which phases are done, the policy step) and one safetensors or torch
file per saved piece. Every file is written to a temporary name and renamed over the old
one, and `state.json` is written last, so a run killed mid-save leaves the previous
consistent checkpoint. Only trainable tensors are saved (LoRA adapters, the trained top
layers, heads): the frozen rest is the base model, which is never modified on disk.

Nothing here knows what a phase does; pipeline.py decides what to save and when.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import write_error
from trainer.errors import TrainerError

STATE_FILE = "state.json"


def runs_root(data_dir: Path) -> Path:
    return Path(data_dir) / "training"


def run_folder(data_dir: Path, run_id: int) -> Path:
    return runs_root(data_dir) / f"run-{run_id}"


def _replace_atomically(target: Path, write: Any) -> None:
    """Write through a temporary sibling and rename it over `target`, so `target` is always
    either the old file or the whole new one. A failed write (a full disk makes torch and
    safetensors raise their own errors, not OSError) is a TrainerError naming the file and
    the reason; the old file stays."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, target)
    except (OSError, RuntimeError, SafetensorError) as exc:
        reason = write_error(exc if isinstance(exc, OSError) else OSError(str(exc)), target)
        if reason.errno is None:
            raise
        raise TrainerError(f"cannot write the checkpoint {str(target)!r}: {os.strerror(reason.errno)}"
                           f"{' (ENOSPC)' if reason.errno == errno.ENOSPC else ''}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of `model`'s trainable parameters, by name (copies, on the CPU)."""
    return {name: p.detach().to("cpu").contiguous().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put saved trainable tensors back; every saved name must exist in the model."""
    params = dict(model.named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise TrainerError(f"checkpoint tensor {missing[0]!r} does not match the model (was it made with other settings?)")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


class RunCheckpoint:
    """The checkpoint folder of one training run."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def exists(self) -> bool:
        return (self.folder / STATE_FILE).is_file()

    def read_state(self) -> dict[str, Any]:
        if not self.exists:
            return {}
        try:
            return json.loads((self.folder / STATE_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise TrainerError(f"checkpoint state {str(self.folder / STATE_FILE)!r} is corrupt: {exc}") from None

    def write_state(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _replace_atomically(self.folder / STATE_FILE, lambda tmp: tmp.write_text(json.dumps(state, indent=2, sort_keys=True)))

    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _replace_atomically(self.folder / f"{name}.safetensors", lambda tmp: save_file(tensors, str(tmp)))

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        path = self.folder / f"{name}.safetensors"
        if not path.is_file():
            raise TrainerError(f"checkpoint file {str(path)!r} is missing")
        return load_file(str(path))

    def save_object(self, name: str, value: Any) -> None:
        """Optimizer states and the like (torch.save; read back with weights_only)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _replace_atomically(self.folder / f"{name}.pt", lambda tmp: torch.save(value, tmp))

    def load_object(self, name: str) -> Any:
        path = self.folder / f"{name}.pt"
        if not path.is_file():
            raise TrainerError(f"checkpoint file {str(path)!r} is missing")
        return torch.load(path, map_location="cpu", weights_only=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

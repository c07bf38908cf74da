"""Find the models a person already has: Ollama's store, LM Studio's models folder, the
Hugging Face cache, and any folder they name.

Where each program keeps its models (each program's own rule):

- Ollama: `$OLLAMA_MODELS`, else `~/.ollama/models` (engine/loading/ollama.py);
- LM Studio: `~/.lmstudio/models` (`~/.cache/lm-studio/models` before version 0.3),
  publisher/repository folders of .gguf files;
- Hugging Face: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
  else `~/.cache/huggingface/hub`; each `models--ORG--NAME/snapshots/REVISION/` folder is a
  model directory (config.json with safetensors) or holds .gguf files.

Each model found is a `FoundModel`: the argument `chat-tui models import` takes for it,
its size, its architecture (read from the GGUF header's first keys or config.json, never
from a name), and why it cannot be imported when it cannot. Nothing here imports or
loads weights.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelLoadError
from engine.loading.gguf_config import MODEL_TYPES
from engine.loading.gguf_reader import read_metadata
from engine.loading.ollama import list_models as ollama_manifests
from engine.loading.ollama import ollama_root, read_manifest
from engine.models.registry import ARCHITECTURES

OLLAMA, LM_STUDIO, HUGGING_FACE, FOLDER = "Ollama", "LM Studio", "Hugging Face cache", "folder"
_SPLIT_PART = re.compile(r"-\d{5}-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class FoundModel:
    place: str  # OLLAMA, LM_STUDIO, HUGGING_FACE or FOLDER
    reference: str  # what `chat-tui models import` takes: ollama:NAME:TAG or a path
    size_bytes: int
    architecture: str | None  # GGUF general.architecture or config.json model_type
    problem: str | None = None  # why it cannot be imported; None when it can

    @property
    def is_importable(self) -> bool:
        return self.problem is None


def lm_studio_roots() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def hugging_face_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size  # follows the HF cache's symlinks to the blobs
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def gguf_file(path: Path, place: str) -> FoundModel:
    """What a .gguf file is, from its header's first keys."""
    split = _SPLIT_PART.search(path.name)
    try:
        architecture = read_metadata(path, until="general.architecture").fields.get("general.architecture")
    except ModelLoadError as exc:
        return FoundModel(place, str(path), _size(path), None, str(exc).removeprefix(f"{path}: "))
    problem = None
    if split and int(split.group(1)) > 1:
        problem = "one part of a split GGUF file; merge the parts first"
    elif architecture not in MODEL_TYPES:
        problem = f"architecture {architecture!r} is not covered"
    return FoundModel(place, str(path), _size(path), architecture, problem)


def model_directory(path: Path, place: str) -> FoundModel:
    """What an HF-layout directory is, from its config.json."""
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return FoundModel(place, str(path), _size(path), None, "config.json is not readable")
    problem = None
    if model_type not in ARCHITECTURES:
        problem = f"architecture {model_type!r} is not covered"
    elif not any(path.glob("*.safetensors")):
        problem = "no .safetensors weights"
    return FoundModel(place, str(path), _size(path), model_type, problem)


def in_folder(root: Path, place: str = FOLDER) -> list[FoundModel]:
    """Every .gguf file and model directory (with config.json) under `root`."""
    if not root.is_dir():
        return []
    found = [gguf_file(p, place) for p in sorted(root.rglob("*.gguf")) if p.is_file()]
    found += [model_directory(p.parent, place) for p in sorted(root.rglob("config.json"))]
    return found


def in_ollama(root: Path | None = None) -> list[FoundModel]:
    root = root or ollama_root()
    found = []
    for reference in ollama_manifests(root):
        name = f"ollama:{reference.short}"
        try:
            model = read_manifest(reference, root)
        except ModelLoadError as exc:
            found.append(FoundModel(OLLAMA, name, 0, None, str(exc).split(": ", 1)[-1]))
            continue
        entry = gguf_file(model.model_blob, OLLAMA)
        found.append(FoundModel(OLLAMA, name, model.size_bytes, entry.architecture, entry.problem))
    return found


def in_hugging_face_cache(root: Path | None = None) -> list[FoundModel]:
    root = root or hugging_face_cache()
    found = []
    for snapshot in sorted(root.glob("models--*/snapshots/*")) if root.is_dir() else []:
        found += [gguf_file(p, HUGGING_FACE) for p in sorted(snapshot.rglob("*.gguf"))]
        if (snapshot / "config.json").is_file():
            found.append(model_directory(snapshot, HUGGING_FACE))
    return found


def discover(folders: list[Path] | None = None) -> list[FoundModel]:
    """Models in Ollama's store, LM Studio's folder, the Hugging Face cache and `folders`."""
    found = in_ollama()
    for root in lm_studio_roots():
        found += in_folder(root, LM_STUDIO)
    found += in_hugging_face_cache()
    for folder in folders or []:
        found += in_folder(Path(folder).expanduser())
    return found


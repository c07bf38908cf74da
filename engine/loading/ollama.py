"""Models in Ollama's store, named as `ollama:NAME[:TAG]`.

Ollama keeps its models under `$OLLAMA_MODELS`, else `~/.ollama/models`:

    manifests/<registry>/<namespace>/<model>/<tag>   a JSON image manifest
    blobs/sha256-<hex>                               every layer, by digest

A name reads as Ollama reads it: `qwen2.5-coder` is
`registry.ollama.ai/library/qwen2.5-coder:latest`, `user/model:tag` has its own namespace,
`host/namespace/model:tag` its own registry. The manifest's layers say what each blob is:
the layer of media type `application/vnd.ollama.image.model` is the GGUF file; `params`
(JSON: stop strings, sampling values), `template` (a Go template), `system` and `license`
are text beside it; `adapter` (a LoRA to apply on top) and `projector` (a vision
encoder) are further weights.

`find_model` resolves a name to an `OllamaModel` (its GGUF blob, params and template);
`list_models` walks the manifests (for `chat-tui models discover`). Errors a user can
cause (a missing model, a manifest without a model layer, a missing blob, an adapter
layer this import cannot apply) are one-line `ModelLoadError`s naming the file. Turning
the blob into a store entry is the model store's job (engine/loading/model_store.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError

PREFIX = "ollama:"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MEDIA_TYPE = "application/vnd.ollama.image."
MODEL_LAYER = MEDIA_TYPE + "model"
ADAPTER_LAYER = MEDIA_TYPE + "adapter"


def ollama_root() -> Path:
    """Ollama's model folder: $OLLAMA_MODELS, else ~/.ollama/models (Ollama's own rule)."""
    override = os.environ.get("OLLAMA_MODELS")
    return Path(override).expanduser() if override else Path.home() / ".ollama" / "models"


def is_ollama_reference(text: str) -> bool:
    return str(text).startswith(PREFIX)


@dataclass(frozen=True)
class Reference:
    registry: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """`ollama:NAME[:TAG]` (the prefix optional) as Ollama reads it."""
        name = text[len(PREFIX):] if text.startswith(PREFIX) else text
        path, tag = name, ""
        if ":" in name and "/" not in name.rsplit(":", 1)[1]:  # a registry's port is no tag
            path, tag = name.rsplit(":", 1)
        parts = path.split("/")
        if not name or not all(parts) or "\\" in name or any(p in (".", "..") for p in parts) or len(parts) > 3 \
                or tag in (".", ".."):
            raise ModelLoadError(f"{text!r} is not an Ollama model name (use ollama:NAME or ollama:NAME:TAG)")
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
        return cls(parts[0], parts[1], parts[2], tag or DEFAULT_TAG)

    def manifest(self, root: Path) -> Path:
        return root / "manifests" / self.registry / self.namespace / self.model / self.tag

    @property
    def short(self) -> str:
        """The name as `ollama list` shows it: no default registry or namespace."""
        prefix = "" if self.registry == DEFAULT_REGISTRY else f"{self.registry}/"
        prefix += "" if self.registry == DEFAULT_REGISTRY and self.namespace == DEFAULT_NAMESPACE else f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


@dataclass
class OllamaModel:
    reference: Reference
    manifest: Path
    model_blob: Path
    size_bytes: int  # of the model blob, as the manifest says
    params: dict[str, Any] = field(default_factory=dict)  # the params layer (stop strings, sampling values)
    template: str | None = None  # Ollama's Go template (the GGUF's own Jinja template is what runs)
    system: str | None = None

    @property
    def name(self) -> str:
        return PREFIX + self.reference.short


def _blob(root: Path, digest: str, manifest: Path) -> Path:
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm != "sha256" or not hexdigest or not hexdigest.isalnum():
        raise ModelLoadError(f"{manifest}: layer digest {digest!r} is not a sha256 digest")
    return root / "blobs" / f"sha256-{hexdigest}"


def _read_manifest(manifest: Path) -> list[dict[str, Any]]:
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{manifest}: not a readable Ollama manifest ({exc})") from None
    layers = raw.get("layers") if isinstance(raw, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ModelLoadError(f"{manifest}: not an Ollama manifest (no list of layers)")
    return layers


def _text_layer(root: Path, layer: dict[str, Any], manifest: Path) -> str | None:
    try:
        return _blob(root, layer.get("digest", ""), manifest).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # text beside the model: its absence does not stop an import


def read_manifest(reference: Reference, root: Path) -> OllamaModel:
    """The model a manifest describes; ModelLoadError for a manifest that cannot be imported."""
    manifest = reference.manifest(root)
    layers = _read_manifest(manifest)
    kinds = [str(layer.get("mediaType", "")) for layer in layers]
    if MODEL_LAYER not in kinds:
        raise ModelLoadError(f"{manifest}: the manifest has no model layer ({MODEL_LAYER}), so there is nothing to import")
    if ADAPTER_LAYER in kinds:
        raise ModelLoadError(f"{manifest}: the model adds a LoRA adapter layer, which import cannot apply")
    model_layer = layers[kinds.index(MODEL_LAYER)]
    blob = _blob(root, model_layer.get("digest", ""), manifest)
    if not blob.is_file():
        raise ModelLoadError(f"{blob}: the model blob of {PREFIX}{reference.short} is missing from Ollama's store")
    size = int(model_layer.get("size") or 0)
    if size and blob.stat().st_size != size:
        raise ModelLoadError(f"{blob}: the model blob has {blob.stat().st_size} bytes, its manifest says {size}")
    model = OllamaModel(reference, manifest, blob, size or blob.stat().st_size)
    for layer, kind in zip(layers, kinds):
        if kind == MEDIA_TYPE + "params":
            try:
                params = json.loads(_text_layer(root, layer, manifest) or "{}")
            except json.JSONDecodeError:
                params = {}
            model.params = params if isinstance(params, dict) else {}
        elif kind == MEDIA_TYPE + "template":
            model.template = _text_layer(root, layer, manifest)
        elif kind == MEDIA_TYPE + "system":
            model.system = _text_layer(root, layer, manifest)
    return model


def list_models(root: Path | None = None) -> list[Reference]:
    """Every manifest in the store (importable or not), by name."""
    base = (root or ollama_root()) / "manifests"
    if not base.is_dir():
        return []
    found = []
    for manifest in sorted(base.glob("*/*/*/*")):
        if manifest.is_file():
            registry, namespace, model, tag = manifest.relative_to(base).parts
            found.append(Reference(registry, namespace, model, tag))
    return found


def find_model(text: str, root: Path | None = None) -> OllamaModel:
    """The model `ollama:NAME[:TAG]` names in the store at `root` (default: `ollama_root()`)."""
    root = root or ollama_root()
    reference = Reference.parse(text)
    if not reference.manifest(root).is_file():
        known = ", ".join(r.short for r in list_models(root)) or "none"
        raise ModelLoadError(
            f"{text}: no such model in Ollama's store ({reference.manifest(root)} does not exist; models there: {known})"
        )
    return read_manifest(reference, root)


def stop_token_ids(params: dict[str, Any], token_id) -> list[int]:
    """The ids of the params' stop strings that are whole tokens of the vocabulary
    (`token_id(text)` -> id or None): Ollama stops on them, and so will the engine."""
    stops = params.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    ids = [token_id(s) for s in stops if isinstance(s, str)]
    return [i for i in ids if isinstance(i, int)]

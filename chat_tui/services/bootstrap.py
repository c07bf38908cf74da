"""Which model the chat opens on, and making sure there is one.

Order: an explicit version id (a switch from the models screen); `--model` as a model
version name, else as anything `engine.loading.load_model` accepts (a model-store name
or a path), registered as a new version once it has loaded; the active version; and on
a fresh install the default model, imported once into the model store, registered in
the feedback store and activated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from chat_tui.errors import UserError
from feedback.errors import NotFoundError

Progress = Callable[[str, str], None]  # (model label, what is happening)


@dataclass(frozen=True)
class ModelChoice:
    path: str
    version_id: int | None  # None: not a version yet; registered after it loads
    label: str


def choose_model(store: Any, requested: str | None, version_id: int | None, progress: Progress) -> ModelChoice:
    """Resolve what to load. May import the default model (slow): call from a worker.
    Removes what killed imports left in the model store first (the app's start)."""
    from chat_tui.paths import models_dir
    from engine.loading import ModelStore

    ModelStore(models_dir()).remove_abandoned_staging()
    if version_id is not None:
        return _choice(store.get_model_version(version_id))
    if requested:
        try:
            version = store.get_model_version(requested)
        except NotFoundError:
            return ModelChoice(requested, None, label_for(requested))
        return _choice(version)
    active = store.active_model_version()
    if active is not None:
        return _choice(active)
    return import_default_model(store, progress)


def _choice(version: Any) -> ModelChoice:
    if version.is_removed:
        raise UserError(f"model version {version.name!r} was removed (chat-tui models remove); pick another")
    return ModelChoice(version.path, version.id, version.name)


def label_for(name_or_path: str) -> str:
    """A short name for a model given by store name or path: the folder's or file's name."""
    path = Path(name_or_path)
    return path.stem if path.suffix == ".gguf" else path.name or name_or_path


def import_default_model(store: Any, progress: Progress) -> ModelChoice:
    """Import the shipped default model (once) and make it the active version."""
    from chat_tui.paths import models_dir
    from engine.loading import ensure_default_model

    progress("the default model", "importing it into the model store, once (about a minute)…")
    path = ensure_default_model(models_dir())
    name = path.name
    try:
        version = store.get_model_version(name)
    except NotFoundError:
        version = store.register_model_version(name, str(path), source="import", activate=True)
    else:
        version = store.activate_model_version(version.id)
    return ModelChoice(version.path, version.id, version.name)


def register_loaded(store: Any, choice: ModelChoice, loaded_path: str) -> int:
    """Record a model given with --model as a version (not active), reusing one with its
    path. The path is stored absolute, so the version is found from any folder."""
    loaded_path = str(Path(loaded_path).resolve())
    for version in store.list_model_versions():
        if str(Path(version.path).resolve()) == loaded_path:
            return version.id
    name = choice.label
    taken = {version.name for version in store.list_model_versions()}
    suffix = 2
    while name in taken:
        name = f"{choice.label}-{suffix}"
        suffix += 1
    return store.register_model_version(name, loaded_path, source="import").id

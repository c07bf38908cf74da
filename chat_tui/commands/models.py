"""`chat-tui models ...`: the model store and the model versions from the command line.

`import` brings a model into the store (`chat_tui.paths.models_dir()`, done by
`engine.loading`), `discover` finds models elsewhere on the machine; `export` writes a
version as GGUF (commands/export.py); `list`, `activate`, `rollback`, `remove` and
`leaderboard` manage the versions (commands/versions.py). Errors (a bad path, a corrupt
file, an unsupported model, a missing Ollama model) reach
`chat_tui.cli.main` as `ModelLoadError` and are printed as one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from chat_tui.paths import ensure_data_dir, models_dir


@click.group()
def models() -> None:
    """Import and export models, and manage the versions the chat uses: list, activate, roll back, remove, rank."""


@models.command("import")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--name", default=None, help="Name in the store (default: the file, directory or Ollama model name).")
def import_command(path: str, name: str | None) -> None:
    """Import PATH: a Hugging Face model directory, a .gguf file, or ollama:NAME[:TAG].

    GGUF files of the llama (Llama, Mistral, SmolLM, TinyLlama), qwen2, phi3 and gemma3
    architectures load, in any common quantization. ollama:NAME[:TAG] takes the model from
    Ollama's store ($OLLAMA_MODELS, else ~/.ollama/models). The model is converted to an
    ordinary model directory (safetensors, config, tokenizer, chat template) in the store;
    nothing is written if anything about it is wrong. `chat-tui models discover` lists
    what there is to import.
    """
    from engine.loading import ModelStore

    ensure_data_dir()
    started = time.perf_counter()
    target = ModelStore(models_dir()).import_model(path, name=name)
    click.echo(f"Imported {target.name!r} into {target} in {time.perf_counter() - started:.1f}s")


@models.command("discover")
@click.option("--all", "show_all", is_flag=True, help="Also list models that cannot be imported, with the reason.")
@click.option("--folder", "folders", multiple=True, type=click.Path(file_okay=False, path_type=str),
              help="Another folder to search for .gguf files and model directories (repeatable).")
def discover_command(show_all: bool, folders: tuple[str, ...]) -> None:
    """List models on this machine that `chat-tui models import` can take, with sizes.

    Searches Ollama's store ($OLLAMA_MODELS, else ~/.ollama/models), LM Studio's models
    folder (~/.lmstudio/models) and the Hugging Face cache ($HF_HUB_CACHE, else
    ~/.cache/huggingface/hub), plus any --folder. The first column is what to pass to
    `chat-tui models import`.
    """
    from engine.loading.discover import discover

    found = discover([Path(f) for f in folders])
    shown = [m for m in found if show_all or m.is_importable]
    hidden = len(found) - len(shown)
    if not shown:
        click.echo("No importable models found" + (f" ({hidden} others; --all lists them)." if hidden else "."))
        return
    width = max(len(m.reference) for m in shown)
    for model in shown:
        size = f"{model.size_bytes / 1e6:9.1f} MB"
        line = f"{model.reference:<{width}}  {model.architecture or '?':<12} {size}  {model.place}"
        click.echo(line if model.is_importable else f"{line}  (cannot import: {model.problem})")
    if hidden:
        click.echo(f"({hidden} more that cannot be imported; --all lists them)")


from chat_tui.commands.export import export_command  # noqa: E402  (kept in its own module)

models.add_command(export_command)

from chat_tui.commands.versions import (  # noqa: E402  (versions: their own module)
    activate_command, leaderboard_command, list_command, remove_command, rollback_command,
)

for _command in (list_command, activate_command, rollback_command, remove_command, leaderboard_command):
    models.add_command(_command)

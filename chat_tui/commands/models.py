"""`chat-tui models import|list|discover|export`: the model store from the command line.

The store lives in the data directory (`chat_tui.paths.models_dir()`); importing,
listing and finding models elsewhere on the machine are done by `engine.loading`. Errors
(a bad path, a corrupt file, an unsupported model, a missing Ollama model) reach
`chat_tui.cli.main` as `ModelLoadError` and are printed as one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from chat_tui.paths import ensure_data_dir, models_dir


@click.group()
def models() -> None:
    """Import models into chat-tui's model store and list what it holds."""


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


@models.command("list")
def list_command() -> None:
    """List the models in the store with their source and size."""
    from engine.loading import ModelStore

    stored = ModelStore(models_dir()).list_models()
    if not stored:
        click.echo(f"No models in {models_dir()} yet (the default model is imported on first use).")
        return
    width = max(len(m.name) for m in stored)
    for model in stored:
        source = model.info.get("source", "?")
        origin = model.info.get("imported_from") or model.info.get("parent") or ""
        size_mb = model.size_bytes / 1e6
        line = f"{model.name:<{width}}  {source:<8} {size_mb:8.1f} MB  {model.info.get('created_at', '')}"
        click.echo(f"{line}  {origin}".rstrip())


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

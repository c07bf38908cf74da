"""`chat-tui models import|list`: the model store from the command line.

The store lives in the data directory (`chat_tui.paths.models_dir()`); importing and
listing are done by `engine.loading`. Errors (a bad path, a corrupt file, an unsupported
model) reach `chat_tui.cli.main` as `ModelLoadError` and are printed as one line.
"""

from __future__ import annotations

import time

import click

from chat_tui.paths import ensure_data_dir, models_dir


@click.group()
def models() -> None:
    """Import models into chat-tui's model store and list what it holds."""


@models.command("import")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--name", default=None, help="Name in the store (default: the file or directory name).")
def import_command(path: str, name: str | None) -> None:
    """Import PATH: a Hugging Face model directory or a llama-architecture .gguf file.

    The model is converted to an ordinary model directory (safetensors, config, tokenizer,
    chat template) in the store; nothing is written if anything about it is wrong.
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


from chat_tui.commands.export import export_command  # noqa: E402  (kept in its own module)

models.add_command(export_command)

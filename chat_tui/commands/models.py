"""`chat-tui models ...`: the model store and the model versions from the command line.

`import` brings a model into the store (`chat_tui.paths.models_dir()`, done by
`engine.loading`); `export` writes a version as GGUF (commands/export.py); `list`,
`activate`, `rollback`, `remove` and `leaderboard` manage the versions
(commands/versions.py). Errors (a bad path, a corrupt file, an unsupported model) reach
`chat_tui.cli.main` as `ModelLoadError` and are printed as one line.
"""

from __future__ import annotations

import time

import click

from chat_tui.paths import ensure_data_dir, models_dir


@click.group()
def models() -> None:
    """Import and export models, and manage the versions the chat uses: list, activate, roll back, remove, rank."""


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


from chat_tui.commands.export import export_command  # noqa: E402  (kept in its own module)

models.add_command(export_command)

from chat_tui.commands.versions import (  # noqa: E402  (versions: their own module)
    activate_command, leaderboard_command, list_command, remove_command, rollback_command,
)

for _command in (list_command, activate_command, rollback_command, remove_command, leaderboard_command):
    models.add_command(_command)

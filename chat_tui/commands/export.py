"""`chat-tui models export`: write a model version as a GGUF file for llama.cpp / Ollama.

Finds the version (a feedback-store model version by name or id, a model-store name, or
a model directory) and hands it to engine.export.gguf, which does the work and refuses
what GGUF cannot represent.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from chat_tui.errors import UserError
from chat_tui.paths import database_path, models_dir


def resolve_version(version: str) -> Path:
    """The model directory of VERSION: a recorded model version, a store name, or a path."""
    if database_path().is_file():
        from feedback import Store
        from feedback.errors import NotFoundError

        key: int | str = int(version) if version.isdigit() else version
        try:
            return Path(Store(database_path()).get_model_version(key).path)
        except NotFoundError:
            pass  # not a recorded version: maybe a store name or a path
    from engine.loading import ModelStore

    path = ModelStore(models_dir()).resolve(version)
    if not path.is_dir():
        raise UserError(f"{version!r} is a file ({path}), not a model directory; only model directories export")
    return path


@click.command(name="export")
@click.argument("version")
@click.option("--format", "file_format", type=click.Choice(["gguf"]), default="gguf", show_default=True,
              help="Output format.")
@click.option("--type", "export_type", type=click.Choice(["f16", "q8_0", "f32"]), default="f16", show_default=True,
              help="Weight type: f16 (exact to ~1e-3), q8_0 (half the size), f32 (lossless).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (replaced if it exists).")
def export_command(version: str, file_format: str, export_type: str, output: Path) -> None:
    """Export model VERSION as a GGUF file (for llama.cpp and Ollama).

    VERSION is a model version's name or id, a model in the store, or a model directory.
    The file's architecture is the one llama.cpp runs the model with: llama (Llama,
    Mistral, SmolLM, TinyLlama, Phi-3), qwen2 or gemma3. The tokenizer and chat template
    go into the file's metadata. PaLM models cannot be exported.
    """
    from engine.export.gguf import export_gguf

    source = resolve_version(version)
    started = time.perf_counter()
    written = export_gguf(source, output, export_type, name=source.name)
    size_mb = written.stat().st_size / 1e6
    click.echo(f"Wrote {written} ({export_type}, {size_mb:.1f} MB) in {time.perf_counter() - started:.1f}s")

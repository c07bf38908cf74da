"""`chat-tui feedback export|import|stats`: the feedback database from the command line.

Opens the store at `chat_tui.paths.database_path()` (in the data directory); the work is
done by the `feedback` package. Imports no torch.
"""

from __future__ import annotations

import json
import sys

import click

from chat_tui.paths import database_path, ensure_data_dir


def _open_store():
    from feedback import Store

    ensure_data_dir()
    return Store(database_path())


@click.group()
def feedback() -> None:
    """Export, import and count the feedback you gave (ratings, rankings, written replies)."""


@feedback.command("export")
@click.option(
    "--format",
    "kind",
    type=click.Choice(["pairs", "sft", "trees", "trl", "kto"]),
    required=True,
    help="pairs: prompt/chosen/rejected with context; sft: prompt/completion; trees: whole conversations; "
         "trl: conversational prompt/chosen/rejected (TRL's DPO and reward trainers); "
         "kto: conversational prompt/completion/label (TRL's KTO trainer).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="File to write (JSONL). Default: standard output.")
def export_command(kind: str, output: str | None) -> None:
    """Write the feedback as JSONL, one record per line."""
    from feedback.exporting import export_rows, export_to_file, write_jsonl

    with _open_store() as store:
        if output is None:
            write_jsonl(export_rows(store, kind), sys.stdout)
        else:
            count = export_to_file(store, kind, output)
            click.echo(f"Wrote {count} {kind} records to {output}", err=True)


@feedback.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "kind", type=click.Choice(["auto", "pairs", "openwebui"]), default="auto", show_default=True,
              help="pairs: JSONL prompt/chosen/rejected (texts or chat-message lists); openwebui: Open WebUI's "
                   "feedback export (a JSON array of ratings and arena comparisons); auto: a JSON array is Open WebUI's.")
def import_command(file: str, kind: str) -> None:
    """Import feedback from FILE: preference pairs (JSONL) or an Open WebUI feedback export.

    All or nothing: a malformed line or item is reported with its number and nothing is
    imported. Importing the same file again adds nothing.
    """
    from feedback.importing import read_import_file

    if kind == "auto":
        kind = "openwebui" if _starts_with(file, b"[") else "pairs"
    items = read_import_file(file, kind)  # the whole file checked before the database is opened or made
    with _open_store() as store:
        result = store.import_items(items)
    parts = [f"{result.num_pairs} preference pairs"]
    if kind == "openwebui":
        parts.append(f"{result.num_judgments} lone ratings")
    notes = []
    if result.num_known:
        notes.append(f"{result.num_known} already imported")
    if result.num_skipped:
        notes.append(f"{result.num_skipped} skipped: nothing to learn from")
    extra = f" ({'; '.join(notes)})" if notes else ""
    click.echo(f"Imported {' and '.join(parts)} from {file}{extra}")


def _starts_with(path: str, prefix: bytes) -> bool:
    """Whether the file's first non-blank byte starts `prefix`."""
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip().startswith(prefix)


@feedback.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def stats_command(as_json: bool) -> None:
    """Count conversations, replies, ratings, rankings, pairs and demonstrations, overall and per model version."""
    with _open_store() as store:
        stats = store.stats()
    if as_json:
        click.echo(json.dumps(stats.to_dict(), indent=2))
        return
    width = max(len(name) for name in stats.counts)
    for name, value in stats.counts.items():
        click.echo(f"{name.replace('_', ' '):<{width}}  {value}")
    if stats.per_version:
        click.echo("")
        click.echo(f"{'model version':<24} {'replies':>8} {'up':>6} {'down':>6}")
        for version in stats.per_version:
            marker = " *" if version.is_active else ""
            click.echo(f"{(version.name + marker):<24} {version.num_replies:>8} {version.num_up:>6} {version.num_down:>6}")

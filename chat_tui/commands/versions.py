"""`chat-tui models list|activate|rollback|remove|leaderboard`: model versions from the shell.

The `models` group (commands/models.py) adds these. Each opens the feedback store, does
one thing through chat_tui/services/versions.py (shared with the app's models screen)
and says what it did in a line; a name that is not a version, the active version given
to `remove`, and the like are one-line errors that change nothing.
"""

from __future__ import annotations

import click

from chat_tui.paths import database_path, ensure_data_dir, models_dir


def _open_store():
    from feedback import Store

    ensure_data_dir()
    return Store(database_path())


@click.command("list")
def list_command() -> None:
    """List the model versions as a tree of lineage: the active one (●), where each came
    from, what its files take, and its headline metrics (held-out feedback, verdict, arena)."""
    from chat_tui.services import versions as v

    with _open_store() as store:
        rows = v.lineage_tree(store.list_model_versions())
        strengths = {s.player: s for s in store.leaderboard()}
    sizes = v.stored_sizes(models_dir())
    if not rows and not sizes:
        click.echo(f"No models or versions yet in {models_dir()} (the default model is imported on first use).")
        return
    names = [row.prefix + row.version.name for row in rows]
    width = max([len("VERSION"), *map(len, names)])
    if rows:
        click.echo(f"   {'VERSION':<{width}}  {'SOURCE':<6}  {'FILES':<22}  CREATED")
    registered = set()
    for row, name in zip(rows, names):
        version = row.version
        folder = version.path.rstrip("/").rsplit("/", 1)[-1]
        registered.add(folder)
        if version.is_removed:
            files = "removed"
        elif folder in sizes:
            size, base = sizes[folder]
            files = v.format_size(size) + (f" (on {base})" if base else "")
        else:
            files = "outside the store"
        mark = "●" if version.is_active else " "
        click.echo(f"{mark}  {name:<{width}}  {version.source:<6}  {files:<22}  {version.created_at[:16].replace('T', ' ')}")
        for line in [*v.headline(version), v.strength_text(strengths.get(version.id))]:
            if line:
                click.echo(f"   {row.below}   {line}")
    others = sorted(set(sizes) - registered)
    if others:
        click.echo(("\n" if rows else "") + "In the model store, not used as a version yet: " + ", ".join(
            f"{name} ({v.format_size(sizes[name][0])})" for name in others))


@click.command("activate")
@click.argument("name")
def activate_command(name: str) -> None:
    """Make version NAME the one the chat and `chat-tui ask` use."""
    from chat_tui.services import versions as v

    with _open_store() as store:
        version = v.activate(store, name)
    click.echo(f"{version.name} is now the active version.")


@click.command("rollback")
def rollback_command() -> None:
    """Activate the active version's parent (undo a switch to a trained version)."""
    from chat_tui.services import versions as v

    with _open_store() as store:
        left, active = v.rollback(store)
    click.echo(f"Rolled back from {left.name} to its parent {active.name}, now the active version.")


@click.command("remove")
@click.argument("name")
def remove_command(name: str) -> None:
    """Remove version NAME's files from the model store (not the active version, nor a base
    other versions are stored as changes to). Its replies and arena results keep its name."""
    from chat_tui.services import versions as v

    with _open_store() as store:
        removal = v.remove(store, name, models_dir())
    if removal.kept_path is not None:
        click.echo(f"Removed {removal.version.name}; its files at {removal.kept_path} are not in the model store "
                   f"and were left alone.")
    else:
        click.echo(f"Removed {removal.version.name}, freeing {v.format_size(removal.freed_bytes)}.")


@click.command("leaderboard")
def leaderboard_command() -> None:
    """Each version's strength from your blind arena choices (Bradley-Terry on the Elo
    scale, with a 95% interval), strongest first."""
    with _open_store() as store:
        board = store.leaderboard()
        names = {version.id: version.name for version in store.list_model_versions()}
    if not board:
        click.echo("No arena choices yet: press a in the chat (or run chat-tui --arena A B) to compare two versions blind.")
        return
    width = max(len("VERSION"), *(len(names.get(s.player, "?")) for s in board))
    click.echo(f"{'#':>2}  {'VERSION':<{width}}  {'STRENGTH':>8}  {'95% INTERVAL':<12}  {'WON':>3} {'LOST':>4} {'TIED':>4}")
    for place, strength in enumerate(board, start=1):
        interval = f"{strength.low:.0f}-{strength.high:.0f}"
        click.echo(f"{place:>2}  {names.get(strength.player, '?'):<{width}}  {strength.rating:>8.0f}  {interval:<12}  "
                   f"{strength.wins:>3} {strength.losses:>4} {strength.ties:>4}")
    matches = sum(s.num_matches for s in board) // 2
    click.echo(f"\n{matches} arena choices. Ties and 'both bad' count half a win each; the interval narrows as you choose more.")

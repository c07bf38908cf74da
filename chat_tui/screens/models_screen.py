"""The model versions: each with its lineage, source, metrics and arena strength; switch.

Enter (or a) makes the highlighted version the active one in the store and dismisses
with its id, so the chat loads it; b dismisses with (version, its parent) to try them
against each other in the arena. Esc closes without a change. The arena column is each
version's Bradley-Terry strength over your blind choices (feedback/leaderboard.py).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from chat_tui.services.versions import strength_text
from feedback.leaderboard import Strength
from feedback.records import ModelVersion
from trainer.card import version_card

# Column heading -> the version metric it shows (as trainer/run.py records them).
SUMMARY_METRICS = {"learned": "heldout_learned", "length": "eval_reply_length_change", "KL": "eval_kl"}


def lineage(version: ModelVersion, by_id: dict[int, ModelVersion]) -> list[ModelVersion]:
    """The version and its ancestors, newest first (stops at a cycle or a deleted parent)."""
    chain = [version]
    seen = {version.id}
    while chain[-1].parent_id is not None and chain[-1].parent_id in by_id and chain[-1].parent_id not in seen:
        chain.append(by_id[chain[-1].parent_id])
        seen.add(chain[-1].id)
    return chain


def arena_cell(strength: Strength | None) -> str:
    if strength is None:
        return ""
    return f"{strength.rating:.0f} ({strength.low:.0f}-{strength.high:.0f})"


def format_metric(name: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if name in ("heldout_learned",):
        return f"{100 * value:.0f}%"
    if name == "eval_reply_length_change":
        return f"{100 * value:+.0f}%"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class ModelsScreen(Screen[int | tuple[int, int] | None]):
    BINDINGS = [
        Binding("enter,a", "activate", "Use this version", id="models.activate", priority=True),
        Binding("b", "arena", "Arena vs parent", id="models.arena", tooltip="Try it against its parent, blind"),
        Binding("escape", "close", "Back", id="models.close"),
    ]

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        self.versions: list[ModelVersion] = []
        self.strengths: dict[int, Strength] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="models"):
            yield Static("Model versions  [dim](● active)[/dim]", classes="screen-title")
            yield DataTable(id="versions", cursor_type="row", zebra_stripes=True)
            yield Static("", id="version-detail")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#versions", DataTable)
        table.add_columns("", "Name", "Source", "Parent", "Created", *SUMMARY_METRICS, "Arena (95%)")
        self.refresh_versions()
        table.focus()

    def refresh_versions(self) -> None:
        self.versions = self.store.list_model_versions()
        self.strengths = {s.player: s for s in self.store.leaderboard()}
        by_id = {v.id: v for v in self.versions}
        table = self.query_one("#versions", DataTable)
        table.clear()
        for version in reversed(self.versions):  # newest first
            parent = by_id[version.parent_id].name if version.parent_id in by_id else ""
            cells = [
                "●" if version.is_active else "",
                version.name,
                version.source,
                parent,
                version.created_at[:16].replace("T", " "),
                *[format_metric(key, version.metrics.get(key)) for key in SUMMARY_METRICS.values()],
                arena_cell(self.strengths.get(version.id)),
            ]
            if version.is_removed:
                cells[2] = "removed"
            table.add_row(*[Text(cell) for cell in cells], key=str(version.id))
        self._show_detail()

    def _highlighted(self) -> ModelVersion | None:
        table = self.query_one("#versions", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((v for v in self.versions if str(v.id) == key), None)

    @on(DataTable.RowHighlighted)
    def _show_detail(self) -> None:
        version = self._highlighted()
        detail = self.query_one("#version-detail", Static)
        if version is None:
            detail.update("No model versions yet.")
            return
        by_id = {v.id: v for v in self.versions}
        chain = " ← ".join(f"{v.name} ({v.source})" for v in lineage(version, by_id))
        text = Text()
        for label, value in (("Lineage", chain), ("Path", version.path)):
            text.append(f"{label:<9}", style="bold")
            text.append(f"{value}\n")
        for line in version_card(version.metrics) or ["no training metrics (imported)"]:
            text.append(f"{line}\n")
        arena = strength_text(self.strengths.get(version.id))
        if arena:
            text.append(f"{arena}\n")
        text.rstrip()
        detail.update(text)

    def action_arena(self) -> None:
        version = self._highlighted()
        if version is None or version.parent_id is None:
            self.notify("Pick a trained version: b puts it against its parent.", severity="warning")
            return
        self.dismiss((version.id, version.parent_id))

    def action_activate(self) -> None:
        version = self._highlighted()
        if version is None:
            return
        if version.is_removed:
            self.notify(f"{version.name} was removed; its files are gone.", severity="error")
            return
        self.store.activate_model_version(version.id)
        self.notify(f"{version.name} is now the active version; loading it.", timeout=3)
        self.dismiss(version.id)

    def action_close(self) -> None:
        self.dismiss(None)

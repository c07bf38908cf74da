"""The model versions: each with its lineage, source and metrics; switch the active one.

Enter (or a) makes the highlighted version the active one in the store and dismisses
with its id, so the chat loads it. Esc closes without a change.
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


class ModelsScreen(Screen[int | None]):
    BINDINGS = [
        Binding("enter,a", "activate", "Use this version", id="models.activate", priority=True),
        Binding("escape", "close", "Back", id="models.close"),
    ]

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        self.versions: list[ModelVersion] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="models"):
            yield Static("Model versions  [dim](● active)[/dim]", classes="screen-title")
            yield DataTable(id="versions", cursor_type="row", zebra_stripes=True)
            yield Static("", id="version-detail")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#versions", DataTable)
        table.add_columns("", "Name", "Source", "Parent", "Created", *SUMMARY_METRICS)
        self.refresh_versions()
        table.focus()

    def refresh_versions(self) -> None:
        self.versions = self.store.list_model_versions()
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
            ]
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
        text.rstrip()
        detail.update(text)

    def action_activate(self) -> None:
        version = self._highlighted()
        if version is None:
            return
        self.store.activate_model_version(version.id)
        self.notify(f"{version.name} is now the active version; loading it.", timeout=3)
        self.dismiss(version.id)

    def action_close(self) -> None:
        self.dismiss(None)

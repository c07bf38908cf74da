"""Model versions as a user manages them: activate, roll back, remove, and how they read.

Shared by `chat-tui models ...` and the app's models screen, so both say the same thing:
the lineage as a tree, each version's headline (its card's first line and verdict,
trainer/card.py), its arena strength (feedback/leaderboard.py), and how much its files
hold. The store writes are the feedback store's; removing files is the model store's
(which refuses a base that other versions are stored as changes to).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat_tui.errors import UserError
from feedback.leaderboard import Strength
from feedback.records import ModelVersion
from trainer.card import version_card


@dataclass(frozen=True)
class TreeRow:
    version: ModelVersion
    depth: int  # 0 for a version with no (known) parent
    is_last: bool  # the last child of its parent: drawn with └─ rather than ├─
    prefix: str  # the tree's drawing for this row, e.g. "│  └─ "
    below: str  # the drawing for lines under this row (its details), e.g. "│     │  "


def lineage_tree(versions: list[ModelVersion]) -> list[TreeRow]:
    """Versions as a tree, parents before children, siblings oldest first."""
    by_id = {v.id: v for v in versions}
    children: dict[int | None, list[ModelVersion]] = {}
    for version in versions:
        parent = version.parent_id if version.parent_id in by_id and version.parent_id != version.id else None
        children.setdefault(parent, []).append(version)
    rows: list[TreeRow] = []
    seen: set[int] = set()

    def walk(parent: int | None, depth: int, lead: str) -> None:
        kids = [v for v in children.get(parent, []) if v.id not in seen]
        for i, version in enumerate(kids):
            seen.add(version.id)
            last = i == len(kids) - 1
            prefix = "" if depth == 0 else lead + ("└─ " if last else "├─ ")
            child_lead = "" if depth == 0 else lead + ("   " if last else "│  ")
            has_children = any(v.id not in seen for v in children.get(version.id, []))
            rows.append(TreeRow(version, depth, last, prefix, child_lead + ("│  " if has_children else "   ")))
            walk(version.id, depth + 1, child_lead)

    walk(None, 0, "")
    return rows


def headline(version: ModelVersion) -> list[str]:
    """The lines that say most about a version: its card's first line and its verdict."""
    card = version_card(version.metrics)
    lines = card[:1]
    verdict = next((line for line in card[1:] if line.startswith("verdict:")), None)
    if verdict:
        lines.append(verdict)
    return lines


def strength_text(strength: Strength | None) -> str:
    if strength is None or not strength.num_matches:
        return ""
    return (f"arena {strength.rating:.0f} ({strength.low:.0f}-{strength.high:.0f}), "
            f"{strength.wins}-{strength.losses}-{strength.ties} won-lost-tied")


def format_size(num_bytes: int) -> str:
    if num_bytes >= 1e9:
        return f"{num_bytes / 1e9:.2f} GB"
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e6 else f"{num_bytes / 1e3:.0f} kB"


def find_version(store: Any, name: str) -> ModelVersion:
    """A version by name (or id given as digits); NotFoundError names it."""
    return store.get_model_version(int(name) if name.isdigit() else name)


def activate(store: Any, name: str) -> ModelVersion:
    version = find_version(store, name)
    return store.activate_model_version(version.id)


def rollback(store: Any) -> tuple[ModelVersion, ModelVersion]:
    """Activate the active version's parent; (the version left, the one now active)."""
    active = store.active_model_version()
    if active is None:
        raise UserError("no version is active yet, so there is nothing to roll back")
    if active.parent_id is None:
        raise UserError(f"{active.name!r} has no parent version to roll back to")
    parent = store.get_model_version(active.parent_id)
    if parent.is_removed:
        raise UserError(f"{active.name!r}'s parent {parent.name!r} was removed; activate another version by name")
    return active, store.activate_model_version(parent.id)


@dataclass(frozen=True)
class Removal:
    version: ModelVersion
    freed_bytes: int
    kept_path: Path | None  # files outside the model store, left where they are


def remove(store: Any, name: str, models_root: Path) -> Removal:
    """Remove a version's files from the model store and mark it removed. Refused for the
    active version, one already removed, and a base other versions are stored against."""
    from engine.loading import ModelStore

    version = find_version(store, name)
    if version.is_active:
        raise UserError(f"{version.name!r} is the active version; activate another first (chat-tui models activate NAME)")
    if version.is_removed:
        raise UserError(f"{version.name!r} was already removed")
    path = Path(version.path)
    model_store = ModelStore(models_root)
    in_store = path.parent.resolve() == model_store.root.resolve() and model_store.has(path.name)
    freed = model_store.remove(path.name) if in_store else 0
    return Removal(store.mark_model_version_removed(version.id), freed, None if in_store else path)


def stored_sizes(models_root: Path) -> dict[str, tuple[int, str | None]]:
    """Store folder name -> (bytes its own files hold, the base it is stored against)."""
    from engine.loading import ModelStore

    return {m.name: (m.size_bytes, m.base) for m in ModelStore(models_root).list_models()}

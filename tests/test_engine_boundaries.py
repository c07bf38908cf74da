"""Data flows one way: no module under engine/ imports chat_tui, feedback or trainer, at
its top or inside a function (a lazy import would hide from an import-time check)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"
OUTSIDE = ("chat_tui", "feedback", "trainer")


def imported_packages(source: str) -> set[str]:
    """The top-level package of every module an import statement in `source` names."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_scan_sees_imports_inside_functions():
    source = "def f():\n    from chat_tui.paths import models_dir\n    import trainer.ops\n"
    assert imported_packages(source) == {"chat_tui", "trainer"}


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda p: str(p.relative_to(ENGINE)))
def test_engine_modules_import_nothing_from_the_app_the_store_or_the_trainer(path):
    assert imported_packages(path.read_text()).isdisjoint(OUTSIDE)

"""Shared pytest fixtures. Every test gets its own data directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def chat_tui_home(tmp_path_factory, monkeypatch):
    """Point CHAT_TUI_HOME at a fresh temporary folder for each test."""
    home = tmp_path_factory.mktemp("chat_tui_home")
    monkeypatch.setenv("CHAT_TUI_HOME", str(home))
    return home

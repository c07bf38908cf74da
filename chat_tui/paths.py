"""Where chat-tui keeps its files.

The data directory is `$CHAT_TUI_HOME` when set, else the platform's user data directory
(e.g. ~/.local/share/chat-tui on Linux). It holds the model store (`models/`) and the
feedback database (`feedback.db`). Nothing here creates files except `ensure_data_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "chat-tui"
HOME_ENV = "CHAT_TUI_HOME"


def data_dir() -> Path:
    """The data directory, from $CHAT_TUI_HOME or the platform default."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def ensure_data_dir() -> Path:
    """The data directory, created (mode 0700) if missing."""
    path = data_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def models_dir() -> Path:
    """The model store: one ordinary model directory per imported or trained model."""
    return data_dir() / "models"


def database_path() -> Path:
    """The feedback database file."""
    return data_dir() / "feedback.db"

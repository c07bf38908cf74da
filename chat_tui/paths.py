"""Where chat-tui keeps its files.

The data directory is `$CHAT_TUI_HOME` when set, else the platform's user data directory
(e.g. ~/.local/share/chat-tui on Linux). It holds the model store (`models/`) and the
feedback database (`feedback.db`). Nothing here creates files except `ensure_data_dir`.

What chat-tui writes there is the user's own (their feedback, models trained on it), so
the command line runs under `private_files`: every folder it creates is 0700 and every
file 0600, whichever package creates it, as the database already is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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


PRIVATE_UMASK = 0o077  # new folders 0700, new files 0600


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Create files and folders readable by the user only while inside (the process's
    umask; restored after)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


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

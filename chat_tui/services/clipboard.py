"""Copying text out of the app, and saying honestly where it went.

The app sends OSC 52, the terminal escape that sets the system clipboard; a terminal
that does not support it ignores it silently, and tmux drops it unless its
`set-clipboard` option is on. Inside tmux the text therefore also goes into tmux's own
paste buffer (`tmux load-buffer -w`, which also forwards it to the outer terminal's
clipboard where tmux may), and the message says so. Nothing here claims a copy
arrived where it cannot know.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any


def copy_text(app: Any, text: str) -> str:
    """Copy `text` (app: the running Textual app); returns where it went, as a phrase."""
    app.copy_to_clipboard(text)  # OSC 52; also what app.clipboard holds
    if not os.environ.get("TMUX"):
        return "sent to the terminal's clipboard (OSC 52; a terminal without it ignores it)"
    try:
        subprocess.run(["tmux", "load-buffer", "-w", "-"], input=text.encode("utf-8"), check=True,
                       capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "sent as OSC 52, which tmux passes on only with `set -g set-clipboard on`"
    return "in tmux's paste buffer (prefix ] pastes it; with set-clipboard on, also the system clipboard)"

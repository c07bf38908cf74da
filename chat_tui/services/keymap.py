"""The user's key remaps: `keymap.json` in the data directory, {binding id: "key,key"}.

The help screen (F1) lists every binding id. A missing file means no remaps; a broken one
is reported by name and ignored, so a typo never keeps the app from starting.
"""

from __future__ import annotations

import json

from chat_tui import paths
from chat_tui.errors import UserError

KEYMAP_FILE = "keymap.json"


def keymap_path():
    return paths.data_dir() / KEYMAP_FILE


def load_keymap() -> dict[str, str]:
    """The remaps, or UserError naming the file and what is wrong with it."""
    path = keymap_path()
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read key remaps from {str(path)!r}: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UserError(f"{str(path)!r} must be a JSON object of binding id -> keys, e.g. {{\"reply.rate_up\": \"u\"}}")
    return raw

"""Every key of the app, read from the bindings themselves (so the help cannot drift from
what the keys do), with the user's remaps applied and each binding's id for remapping.

Remaps come from keymap.json (chat_tui/services/keymap.py).
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from chat_tui.screens.arena_screen import ArenaScreen
from chat_tui.screens.compare_screen import CompareScreen
from chat_tui.screens.models_screen import ModelsScreen
from chat_tui.screens.training_screen import TrainingScreen
from chat_tui.widgets.chat_log import REPLY_COMMANDS, ChatLog
from chat_tui.widgets.conversation_list import ConversationOptions
from chat_tui.widgets.prompt_input import PromptInput

INTRO = """\
# chat-tui keys

Write in the box at the bottom and press **Enter**. Press **↑** (on the first line) to
move to the latest reply: the *reply keys* below then act on it. Every rating, ranking and
taught reply is saved at once; `chat-tui train` (F5) learns from them. Esc closes this help;
ctrl+p opens the command palette with the app's actions.
"""

REMAP = """\
## Remapping keys

Each key has an id (last column). Put remaps in `keymap.json` in the data directory
(`$CHAT_TUI_HOME`), e.g. `{"reply.rate_up": "u", "chat.new": "ctrl+t"}`, and restart.
"""


def key_text(app: App, binding: Binding, keymap: dict[str, str]) -> str:
    """The binding's keys (remapped if the user did) as the footer shows them: ?, ^q, F1."""
    keys = keymap.get(binding.id or "", binding.key)
    return ", ".join(f"`{app.get_key_display(Binding(key.strip(), ''))}`" for key in keys.split(","))


def describe(binding: Binding) -> str:
    if binding.action.startswith("command('"):
        command = binding.action[len("command('") : -2]
        return REPLY_COMMANDS.get(command, binding.description)
    return binding.tooltip or binding.description


def section(app: App, title: str, bindings: list[Binding], keymap: dict[str, str]) -> str:
    rows = [f"| {key_text(app, b, keymap)} | {describe(b)} | `{b.id or ''}` |" for b in bindings if b.description]
    return f"## {title}\n\n| Key | What it does | Id |\n|---|---|---|\n" + "\n".join(rows) + "\n"


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        from chat_tui.screens.chat_screen import ChatScreen  # imports this module too

        keymap = getattr(self.app, "user_keymap", {})
        app_bindings = [b for b in self.app.BINDINGS if isinstance(b, Binding)]
        parts = [
            INTRO,
            section(self.app, "Anywhere", app_bindings + list(ChatScreen.BINDINGS), keymap),
            section(self.app, "Writing a message", list(PromptInput.BINDINGS), keymap),
            section(self.app, "On a reply, or your message (after ↑)", list(ChatLog.BINDINGS), keymap),
            section(self.app, "Conversation list", list(ConversationOptions.BINDINGS), keymap),
            section(self.app, "Compare mode", list(CompareScreen.BINDINGS), keymap),
            section(self.app, "Arena (F6): two versions, blind", list(ArenaScreen.BINDINGS), keymap),
            section(self.app, "Models screen", list(ModelsScreen.BINDINGS), keymap),
            section(self.app, "Training screen", list(TrainingScreen.BINDINGS), keymap),
            REMAP,
        ]
        with VerticalScroll(id="help"):
            yield Markdown("\n".join(parts))

"""The chat app: global keys, the command palette's actions, and the first screen.

Everything else lives in screens (chat_tui/screens/), widgets (chat_tui/widgets/) and the
services that talk to the store and the engine (chat_tui/services/). Styles are in
app.tcss.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from chat_tui.errors import UserError
from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.help_screen import HelpScreen
from chat_tui.services.app_services import AppServices
from chat_tui.services.keymap import load_keymap
from chat_tui.widgets.chat_log import REPLY_COMMANDS


class ChatApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "chat-tui"
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", id="app.help", key_display="F1"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("ctrl+p", "command_palette", "Commands", id="app.palette", show=False),
    ]

    def __init__(self, services: AppServices) -> None:
        super().__init__()
        self.services = services
        self.user_keymap: dict[str, str] = {}

    def on_mount(self) -> None:
        try:
            self.user_keymap = load_keymap()
        except UserError as error:
            self.notify(f"Key remaps ignored: {error}", severity="error", timeout=10)
        if self.user_keymap:
            self.set_keymap(self.user_keymap)
        self.push_screen(ChatScreen(self.services))

    def notify(self, message: str, *, title: str = "", severity: str = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        # Always plain text: notifications quote titles, paths and errors, whose square
        # brackets must show as written rather than be read as markup.
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def on_unmount(self) -> None:
        self.services.model.close()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    @property
    def chat_screen(self) -> ChatScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, ChatScreen)), None)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        chat = self.chat_screen
        if chat is None or screen is not chat:
            return
        yield SystemCommand("New conversation", "Start an empty conversation (ctrl+n)", chat.action_new_conversation)
        yield SystemCommand("Search conversations", "Full-text search over every conversation (ctrl+f)", chat.action_search)
        yield SystemCommand("System prompt", "Set this conversation's system prompt (F3)", chat.action_system_prompt)
        yield SystemCommand("Settings", "Sampling settings and compare k (F2)", chat.action_settings)
        yield SystemCommand("Models", "Model versions, lineage, metrics; switch (F4)", chat.action_models)
        yield SystemCommand("Training", "Train on your feedback (F5)", chat.action_training)
        yield SystemCommand("Help", "Every key (F1)", self.action_help)
        latest = chat.latest_reply()
        if latest is not None:
            for command, title in REPLY_COMMANDS.items():
                if command in ("previous_sibling", "next_sibling", "reasons", "edit"):
                    continue

                async def run(command: str = command) -> None:
                    reply = chat.latest_reply()
                    if reply is not None:
                        await chat.run_reply_command(command, reply)

                yield SystemCommand(f"{title} (latest reply)", f"On the latest reply: {title.lower()}", run)

"""The chat screen's keys for conversations and the other screens: the sidebar (open,
rename, delete, search, hide), a new conversation, the system prompt, settings, models,
training, and exporting the conversation as Markdown.

`ConversationActions` is mixed into ChatScreen (it uses the screen's session, services,
prompt and chat log); it lives apart only to keep each file readable. Store writes go
through ChatSession.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from chat_tui import paths
from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.screens.models_screen import ModelsScreen
from chat_tui.screens.settings_screen import SettingsScreen
from chat_tui.screens.text_prompt_screen import TextPromptScreen
from chat_tui.screens.training_screen import TrainingScreen
from chat_tui.services.markdown_export import write_markdown
from chat_tui.widgets.conversation_list import ConversationList


class ConversationActions:
    """Mixin for ChatScreen: conversations, the sidebar and the other screens."""

    def refresh_sidebar(self) -> None:
        sidebar = self.query_one(ConversationList)
        sidebar.show(self.session.sidebar_items(sidebar.search_query), self.session.conversation_id)

    # Handlers by name, not @on: Textual collects @on handlers only from its own classes,
    # and this is a mixin.
    def on_conversation_list_search_changed(self) -> None:
        self.refresh_sidebar()

    async def on_conversation_list_opened(self, event: ConversationList.Opened) -> None:
        if self.job is not None or self.queued is not None:
            self.notify("A reply is still being written: wait, or press Esc.", severity="warning")
            return
        self.session.open(event.conversation_id)
        await self.show_conversation()
        self.prompt.focus()

    def on_conversation_list_rename_requested(self, event: ConversationList.RenameRequested) -> None:
        current = self.session.store.get_conversation(event.conversation_id).title

        def save(title: str | None) -> None:
            if title:
                self.session.rename(event.conversation_id, title)
                self.refresh_sidebar()
                self._set_title()
                self.notify(f"Renamed to “{title}”.", timeout=2)

        self.app.push_screen(TextPromptScreen("Rename conversation", current), save)

    def on_conversation_list_delete_requested(self, event: ConversationList.DeleteRequested) -> None:
        title = self.session.store.get_conversation(event.conversation_id).title

        async def answer(yes: bool | None) -> None:
            if not yes:
                return
            was_open = event.conversation_id == self.session.conversation_id
            self.session.delete(event.conversation_id)
            self.refresh_sidebar()
            if was_open:
                await self.show_conversation()
            self.notify(f"Deleted “{title}”.", timeout=2)

        self.app.push_screen(ConfirmScreen(Text(f"Delete “{title}” and all its feedback?"), "Delete"), answer)

    async def action_new_conversation(self) -> None:
        if self.job is not None:
            self.notify("A reply is still being written: wait, or press Esc.", severity="warning")
            return
        self.session.new()
        await self.show_conversation()
        self.refresh_sidebar()
        self.prompt.focus()

    def action_search(self) -> None:
        sidebar = self.query_one(ConversationList)
        sidebar.display = True
        sidebar.focus_search()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(ConversationList)
        sidebar.display = not sidebar.display
        if not sidebar.display and self.focused is not None and sidebar in self.focused.ancestors:
            self.prompt.focus()

    def action_export_markdown(self) -> None:
        if self.session.conversation_id is None:
            self.notify("Nothing to export yet: this conversation is empty.", timeout=3)
            return
        path = write_markdown(paths.data_dir() / "exports", self.session.conversation_id, self.session.title,
                              self.session.system_prompt, self.session.turns())
        self.notify(f"Exported the conversation as Markdown to {path}.", timeout=8)

    def action_system_prompt(self) -> None:
        def save(text: str | None) -> None:
            if text is None:
                return
            self.session.set_system_prompt(text)
            self._set_title()
            self.notify("System prompt saved." if text else "System prompt cleared.", timeout=2)

        hint = "Sent before the conversation on every reply from now on. Empty clears it."
        self.app.push_screen(
            TextPromptScreen("System prompt", self.session.system_prompt or "", multiline=True, hint=hint), save
        )

    def action_settings(self) -> None:
        def save(settings: Any) -> None:
            if settings is not None:
                self.services.settings.save(settings)
                self.notify("Settings saved.", timeout=2)

        self.app.push_screen(SettingsScreen(self.services.settings.load()), save)

    def action_models(self) -> None:
        def switch(choice: Any) -> None:
            if isinstance(choice, tuple):  # an arena asked for from the models screen
                self.start_arena(*choice)
            elif choice is not None:
                self.load_model(version_id=choice)

        self.app.push_screen(ModelsScreen(self.services.store), switch)

    def action_training(self) -> None:
        self.app.push_screen(TrainingScreen(self.services))

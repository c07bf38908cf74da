"""The sidebar: a search box over every conversation, and the list, newest first.

The screen gives it conversations to show (`show`); it posts `Opened` when one is picked,
`SearchChanged` as the query is typed, and its list posts `RenameRequested` /
`DeleteRequested` from its keys. It never reads the store itself.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option, OptionDoesNotExist


def option_text(title: str, detail: str) -> Text:
    """A list row: the title, and a dim second line (date, or the matching words)."""
    text = Text(title)
    if detail:
        text.append("\n" + detail, style="dim")
    return text


class ConversationOptions(OptionList):
    BINDINGS = [
        Binding("enter", "select", "Open", id="conversations.open"),
        Binding("r", "request('rename')", "Rename", id="conversations.rename"),
        Binding("delete,d", "request('delete')", "Delete", id="conversations.delete", key_display="del"),
    ]

    def action_request(self, what: str) -> None:
        option = self.highlighted_option
        if option is not None and option.id is not None:
            request = ConversationList.RenameRequested if what == "rename" else ConversationList.DeleteRequested
            self.post_message(request(int(option.id)))


class AboutAConversation(Message):
    """A message naming one conversation."""

    def __init__(self, conversation_id: int) -> None:
        super().__init__()
        self.conversation_id = conversation_id


class ConversationList(Vertical):
    class Opened(AboutAConversation):
        """A conversation was picked from the list."""

    class RenameRequested(AboutAConversation):
        """r on a conversation in the list."""

    class DeleteRequested(AboutAConversation):
        """Delete or d on a conversation in the list."""

    class SearchChanged(Message):
        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search (ctrl+f)", id="search")
        yield Static("Conversations", id="conversations-title")
        yield ConversationOptions(id="conversations")

    @property
    def options(self) -> ConversationOptions:
        return self.query_one(ConversationOptions)

    @property
    def search_query(self) -> str:
        return self.query_one("#search", Input).value.strip()

    def show(self, items: list[tuple[int, str, str]], current_id: int | None = None) -> None:
        """Show (conversation id, title, second line) rows; highlight the current one."""
        options = self.options
        options.clear_options()
        options.add_options(
            [Option(option_text(title, detail), id=str(cid)) for cid, title, detail in items]
        )
        query = self.search_query
        if query and not items:
            title = Text(f"No conversation matches “{query}”.")
        elif query:
            title = Text(f"Matches for “{query}”")
        else:
            title = Text("Conversations" if items else "No conversations yet.")
        self.query_one("#conversations-title", Static).update(title)
        if options.option_count:
            try:
                options.highlighted = options.get_option_index(str(current_id))
            except OptionDoesNotExist:
                options.highlighted = 0

    def focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value.strip()))

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.options.focus()

    @on(OptionList.OptionSelected, "#conversations")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Opened(int(event.option.id)))

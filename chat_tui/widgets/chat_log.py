"""The scrolling list of turns, and the feedback keys that act on the focused reply.

The keys here are active while a turn has focus (focus moves here from the prompt with
Up, or with a click): the feedback keys on a reply, e (edit and resend) on a message of
yours. Each key posts a `ReplyCommand` naming the command and the turn; the chat screen
does the work and writes the store. Up/Down move between turns; Escape or i goes back to
the prompt.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message

from chat_tui.services.turns import Turn
from chat_tui.widgets.message_view import MessageView

# command name -> what the footer and the help screen call it
REPLY_COMMANDS: dict[str, str] = {
    "rate_up": "Thumbs up",
    "rate_down": "Thumbs down",
    "reasons": "Reasons and comment for the rating",
    "regenerate": "Regenerate (new sibling)",
    "previous_sibling": "Previous sibling",
    "next_sibling": "Next sibling",
    "compare": "Compare k alternatives and rank them",
    "teach": "Teach: edit into the reply you wanted",
    "copy_reply": "Copy reply",
    "copy_code": "Copy code block (again for the next)",
    "edit": "Edit your message and send it again (a new branch)",
}
# The commands on a message of yours (edit it, or move between its edited versions); every
# command but edit acts on a reply.
USER_COMMANDS = ("edit", "previous_sibling", "next_sibling")


SIBLINGS = Binding.Group("Siblings", compact=True)


class ChatLog(VerticalScroll):
    BINDINGS = [
        Binding("plus,equals_sign", "command('rate_up')", "Good", id="reply.rate_up", key_display="+"),
        Binding("minus", "command('rate_down')", "Bad", id="reply.rate_down", key_display="-"),
        Binding("t", "command('reasons')", "Reasons", id="reply.reasons", show=False),
        Binding("r", "command('regenerate')", "Regenerate", id="reply.regenerate"),
        Binding("left,h", "command('previous_sibling')", "◀", id="reply.previous_sibling", group=SIBLINGS),
        Binding("right,l", "command('next_sibling')", "▶", id="reply.next_sibling", group=SIBLINGS),
        Binding("c", "command('compare')", "Compare", id="reply.compare"),
        Binding("e", "command('teach')", "Teach", id="reply.teach"),
        Binding("e", "command('edit')", "Edit & resend", id="message.edit"),
        Binding("y", "command('copy_reply')", "Copy", id="reply.copy"),
        Binding("Y", "command('copy_code')", "Copy code", id="reply.copy_code", show=False),
        Binding("up,k", "move(-1)", "Previous message", id="reply.up", show=False),
        Binding("down,j", "move(1)", "Next message", id="reply.down", show=False),
        Binding("escape,i", "back_to_prompt", "Write", id="reply.to_prompt"),
    ]

    class ReplyCommand(Message):
        """A feedback key was pressed on a reply."""

        def __init__(self, command: str, turn: Turn) -> None:
            super().__init__()
            self.command = command
            self.turn = turn

    class BackToPrompt(Message):
        """The user wants to write again."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Reply keys show in the footer (and run) only while a reply has focus; on your own
        # message only its own command does.
        focused = self.screen.focused
        if not isinstance(focused, MessageView):
            return False if action in ("command", "move", "back_to_prompt") else True
        if action == "command":
            return parameters[0] != "edit" if focused.turn.is_reply else parameters[0] in USER_COMMANDS
        return True

    @property
    def replies(self) -> list[MessageView]:
        return [view for view in self.query(MessageView) if view.turn.is_reply]

    @property
    def turns(self) -> list[MessageView]:
        """Every turn that can take focus, in order."""
        return [view for view in self.query(MessageView) if view.can_focus]

    @property
    def latest_reply(self) -> MessageView | None:
        replies = self.replies
        return replies[-1] if replies else None

    def focus_latest_reply(self) -> bool:
        """Focus the latest reply; False when there is none."""
        latest = self.latest_reply
        if latest is None:
            return False
        latest.focus()
        return True

    def action_command(self, command: str) -> None:
        focused = self.screen.focused
        if isinstance(focused, MessageView) and focused.turn.message_id is not None:
            self.post_message(self.ReplyCommand(command, focused.turn))
        elif isinstance(focused, MessageView):
            self.notify("This reply is still being written.", severity="warning")

    def action_move(self, step: int) -> None:
        turns = self.turns
        focused = self.screen.focused
        if focused not in turns:
            return
        index = min(max(turns.index(focused) + step, 0), len(turns) - 1)
        turns[index].focus()
        turns[index].scroll_visible()

    def action_back_to_prompt(self) -> None:
        self.post_message(self.BackToPrompt())

"""The feedback keys on a reply, as part of the chat screen: thumbs and their reasons,
regenerate, siblings, compare, teach, copy; and e on a message of yours (edit and resend).

`ReplyFeedback` is mixed into ChatScreen (it uses the screen's session, services, chat log
and reply writer); it lives apart only to keep each file readable. Every action writes the
store at once through ChatSession and says so with a notification.
"""

from __future__ import annotations

from typing import Any

from chat_tui.screens.compare_screen import CompareScreen
from chat_tui.screens.reasons_screen import ReasonsScreen
from chat_tui.screens.teach_screen import TeachScreen
from chat_tui.screens.text_prompt_screen import TextPromptScreen
from chat_tui.services.clipboard import copy_text
from chat_tui.services.code_blocks import code_blocks
from chat_tui.services.turns import Turn
from chat_tui.widgets.message_view import MessageView

# Commands that start a generation or change the shown path: refused while a reply is written.
BUSY_COMMANDS = ("regenerate", "compare", "teach", "previous_sibling", "next_sibling", "edit")


class ReplyFeedback:
    """Mixin for ChatScreen: what each reply key does."""

    def latest_reply(self) -> Turn | None:
        view = self.log_view.latest_reply
        return view.turn if view is not None and view.turn.message_id is not None else None

    async def run_reply_command(self, command: str, turn: Turn) -> None:
        """Do what a feedback key asks for on `turn` (also reached from the command palette)."""
        message_id = turn.message_id
        assert message_id is not None
        busy = self.job is not None or self.queued is not None
        if busy and command in BUSY_COMMANDS:
            self.notify("A reply is still being written: wait, or press Esc.", severity="warning")
            return
        if command in ("rate_up", "rate_down"):
            value = 1 if command == "rate_up" else -1
            self.session.rate(message_id, value)
            self.refresh_headers()
            verdict = "👍" if value > 0 else "👎"
            self.notify(f"{verdict} saved. Press t to add reasons.", timeout=3)
        elif command == "reasons":
            self._ask_reasons(turn)
        elif command == "regenerate":
            await self._regenerate(turn)
        elif command in ("previous_sibling", "next_sibling"):
            await self._move_sibling(turn, -1 if command == "previous_sibling" else 1)
        elif command == "compare":
            self._compare(turn)
        elif command == "teach":
            self._teach(turn)
        elif command == "copy_reply":
            self.notify(f"The reply ({len(turn.content)} characters): {copy_text(self.app, turn.content)}.", timeout=4)
        elif command == "copy_code":
            self._copy_code(turn)
        elif command == "edit":
            self._edit_and_resend(turn)

    def _ask_reasons(self, turn: Turn) -> None:
        if turn.rating is None:
            self.notify("Rate the reply first: + or -.", severity="warning")
            return

        def save(reasons: Any) -> None:
            if reasons is None:
                return
            self.session.rate(turn.message_id, turn.rating, reasons.tags, reasons.comment)
            self.refresh_headers()
            self.notify(f"Reasons saved: {', '.join(reasons.tags) or 'none'}.", timeout=3)

        self.app.push_screen(ReasonsScreen(turn.rating, list(turn.rating_tags)), save)

    async def _regenerate(self, turn: Turn) -> None:
        if not self.services.model.is_ready:
            self.notify("The model is not ready yet.", severity="warning")
            return
        log = self.log_view
        views = list(log.query(MessageView))
        index = next(i for i, v in enumerate(views) if v.turn.message_id == turn.message_id)
        await log.remove_children(views[index:])
        await self._start_reply(turn.parent_id)
        self.prompt.focus()

    async def _move_sibling(self, turn: Turn, step: int) -> None:
        # From the sibling shown now, not the one the key was pressed on: keys typed faster
        # than the view is redrawn all name the reply that was focused when they arrived.
        current = self.session.shown_sibling(turn.message_id)
        sibling = self.session.sibling_of(current, step)
        if sibling is None:
            self.notify("No more replies that way.", timeout=2)
            return
        self.session.show(sibling)
        await self.show_conversation(focus_id=sibling)

    def _compare(self, turn: Turn) -> None:
        if not self.services.model.is_ready:
            self.notify("The model is not ready yet.", severity="warning")
            return
        settings = self.services.settings.load()
        screen = CompareScreen(self.services, turn.parent_id, self.session.context_for(turn.parent_id), settings,
                               shown_id=turn.message_id)

        async def done(shown_id: int | None) -> None:
            await self.show_conversation(focus_id=shown_id)

        self.app.push_screen(screen, done)

    def _teach(self, turn: Turn) -> None:
        prompt = self.session.context_for(turn.parent_id)[-1]["content"]

        async def save(text: str | None) -> None:
            if text is None:
                return
            message = self.session.teach(turn.message_id, text)
            await self.show_conversation(focus_id=message.id)
            self.notify("Saved your reply as a demonstration.", timeout=3)

        self.app.push_screen(TeachScreen(prompt, turn.content), save)

    def _copy_code(self, turn: Turn) -> None:
        blocks = code_blocks(turn.content)
        if not blocks:
            self.notify("This reply has no code block.", timeout=2)
            return
        index = self.code_block_index.get(turn.message_id, 0) % len(blocks)
        self.code_block_index[turn.message_id] = index + 1
        where = copy_text(self.app, blocks[index].code)
        language = f" ({blocks[index].language})" if blocks[index].language else ""
        self.notify(f"Code block {index + 1} of {len(blocks)}{language}: {where}.", timeout=4)

    def _edit_and_resend(self, turn: Turn) -> None:
        """Your message, edited, sent again as a sibling: a new branch with a fresh reply."""
        if not self.services.model.is_ready and not self.services.model.is_loading:
            self.notify("No model is loaded (F4 picks one); nothing was sent.", severity="error")
            return

        async def send(text: str | None) -> None:
            if not text or text == turn.content:
                return
            message = self.session.edit(turn.message_id, text)
            await self.show_conversation()
            await self._start_reply(message.id)
            self.prompt.focus()

        hint = "Sent as a new branch: the original message and its replies stay (◀ ▶ on it switches back)."
        self.app.push_screen(TextPromptScreen("Edit and send again", turn.content, multiline=True, hint=hint), send)

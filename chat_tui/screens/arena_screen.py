"""One arena round: two model versions answer the same prompt side by side, unnamed.

The two replies stream together (each version has its own engine loop); which version is
on the left is drawn afresh each round. When both are written they are stored as sibling
replies, each with its version; the user then picks the left, the right, a tie or both
bad (number keys). The choice is stored at once (ChatSession.choose_in_arena), the
versions are revealed, and r adds reasons and a comment as for a thumbs. Enter or Esc
goes back to the chat, which shows the winner (the left reply on a tie).

Esc while writing stops both replies; Esc after that closes without a choice (the
replies stay as siblings). The screen dismisses with the id of the reply to show.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState, get_current_worker

from chat_tui.errors import describe_error
from chat_tui.screens.reasons_screen import ReasonsScreen
from chat_tui.services.app_services import AppServices
from chat_tui.services.arena import ArenaSide
from chat_tui.services.chat_session import GeneratedReply
from chat_tui.services.reply_stream import ReplyStream
from chat_tui.widgets.alternative_view import AlternativeView

CHOICES = Binding.Group("Which is better?", compact=True)
# The store's outcome (the left reply is its "first") -> how the screen says it.
OUTCOMES = {"first": "the left one is better", "second": "the right one is better", "tie": "a tie",
            "both_bad": "both bad"}
SIDE_NAMES = ("Left", "Right")


class ArenaScreen(Screen[int | None]):
    BINDINGS = [
        Binding("1,left", "choose('first')", "Left", id="arena.left", group=CHOICES, tooltip="The left reply is better"),
        Binding("2,right", "choose('second')", "Right", id="arena.right", group=CHOICES,
                tooltip="The right reply is better"),
        Binding("3,equals_sign", "choose('tie')", "Tie", id="arena.tie", group=CHOICES, tooltip="Equally good"),
        Binding("4,x", "choose('both_bad')", "Both bad", id="arena.both_bad", group=CHOICES, tooltip="Neither is good"),
        Binding("r", "reasons", "Reasons", id="arena.reasons", tooltip="Reasons and a comment for your choice"),
        Binding("enter", "close", "Back to chat", id="arena.done"),
        Binding("escape", "stop_or_close", "Stop / close", id="arena.close"),
    ]

    class Delta(Message):
        def __init__(self, side: int, text: str) -> None:
            super().__init__()
            self.side = side
            self.text = text

    def __init__(self, services: AppServices, parent_id: int, context: list[dict[str, str]]) -> None:
        super().__init__()
        self.services = services
        self.parent_id = parent_id
        self.context = context
        self.sides: tuple[ArenaSide, ArenaSide] = services.arena.sides()
        settings = services.settings.load()
        self.requests = [ReplyStream(context, settings.sampling_params()) for _ in self.sides]
        self.outputs: list[Any] = [None, None]
        self.reply_ids: list[int] = []  # stored replies, left then right
        self.outcome: str | None = None
        self.tags: list[str] = []
        self.comment: str | None = None

    def compose(self) -> ComposeResult:
        title = Text("Arena, blind: which reply is better? ", style="bold")
        title.append(self.context[-1]["content"][:160])
        yield Static(title, id="arena-title")
        with Horizontal(id="arena-sides"):
            for number, name in enumerate(SIDE_NAMES, start=1):
                yield AlternativeView(number, label=name)
        yield Static("Writing both… (Esc stops)", id="arena-hint")
        yield Footer(show_command_palette=False)

    @property
    def views(self) -> list[AlternativeView]:
        return list(self.query(AlternativeView))

    def on_mount(self) -> None:
        self.streams = [view.start_stream() for view in self.views]
        for side in range(2):
            self._generate(side)

    @work(thread=True, group="arena", exit_on_error=False)
    def _generate(self, side: int) -> Any:
        replier = self.sides[side].serving
        return side, self.requests[side].run(
            replier, lambda _index, text: self.post_message(self.Delta(side, text)), get_current_worker())

    @on(Delta)
    async def _delta(self, event: Delta) -> None:
        await self.streams[event.side].write(event.text)
        self.views[event.side].count_progress()

    @on(Worker.StateChanged)
    async def _finished(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "arena":
            return
        if event.state == WorkerState.ERROR:
            for request in self.requests:
                request.stop()
            self.notify(f"The arena could not answer: {describe_error(event.worker.error)}", severity="error", timeout=10)
            self.dismiss(None)
        elif event.state == WorkerState.SUCCESS:
            side, output = event.worker.result
            self.outputs[side] = output
            await self.streams[side].stop()
            completion = output.completions[0]
            await self.views[side].body.update(completion.text)
            self.views[side].set_finish_reason(completion.finish_reason)
            if all(o is not None for o in self.outputs):
                self._store()

    def _store(self) -> None:
        session = self.services.session
        for side, output, request in zip(self.sides, self.outputs, self.requests):
            completion = output.completions[0]
            reply = GeneratedReply(completion.text, completion.finish_reason, request.sampling_record())
            stored = session.save_replies(self.parent_id, [reply], side.version_id, show_index=None)
            self.reply_ids.append(stored[0].id)
        self.refresh_bindings()
        self._hint()

    def _hint(self) -> None:
        hint = self.query_one("#arena-hint", Static)
        if self.outcome is None:
            hint.update("Which is better? 1: left · 2: right · 3: tie · 4: both bad · Esc: close without choosing")
        else:
            hint.update("Saved. r: reasons and a comment · Enter: back to the chat (the arena goes on; F6 ends it)")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "choose":
            return len(self.reply_ids) == 2
        if action in ("reasons", "close"):
            return self.outcome is not None
        return True

    def action_choose(self, outcome: str) -> None:
        self.outcome = outcome
        self._save()
        self.services.arena.num_choices += 1
        for view, side in zip(self.views, self.sides):
            won = (outcome == "first" and view.number == 1) or (outcome == "second" and view.number == 2)
            view.reveal(side.name, won)
        self.notify(f"Saved: {OUTCOMES[outcome]}.", timeout=3)
        self.refresh_bindings()
        self._hint()

    def _save(self) -> None:
        self.services.session.choose_in_arena(self.reply_ids[0], self.reply_ids[1], self.outcome, self.tags,
                                              self.comment)

    def action_reasons(self) -> None:
        value = -1 if self.outcome == "both_bad" else 1

        def save(reasons: Any) -> None:
            if reasons is not None:
                self.tags, self.comment = reasons.tags, reasons.comment
                self._save()
                self.notify(f"Reasons saved: {', '.join(self.tags) or 'none'}.", timeout=3)

        self.app.push_screen(ReasonsScreen(value, self.tags, self.comment), save)

    def _shown_reply(self) -> int:
        return self.reply_ids[1] if self.outcome == "second" else self.reply_ids[0]

    def action_close(self) -> None:
        shown = self._shown_reply()
        self.services.session.show(shown)
        self.dismiss(shown)

    def action_stop_or_close(self) -> None:
        if len(self.reply_ids) < 2:
            for request in self.requests:
                request.stop()
            return
        if self.outcome is None:
            self.notify("Closed without a choice; both replies are kept as siblings.", timeout=3)
        self.action_close()

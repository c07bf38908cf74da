"""Compare mode: k alternative replies side by side, generated in one batch, then ranked.

The k replies are one engine request with n=k, so the prompt is prefilled once and the
samples decode together. When they finish they are stored as sibling replies; number
keys then rank them best first (after k-1 presses the last place is implied), x marks
them not rankable. The screen dismisses with the id of the reply to show: the best one,
or, when nothing was ranked, the one shown before compare opened.
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
from chat_tui.services.app_services import AppServices
from chat_tui.services.chat_session import GeneratedReply
from chat_tui.services.chat_settings import MAX_COMPARE, ChatSettings
from chat_tui.services.reply_stream import ReplyStream
from chat_tui.widgets.alternative_view import AlternativeView

RANK_GROUP = Binding.Group("Rank, best first", compact=True)


class CompareScreen(Screen[int | None]):
    BINDINGS = [
        *[
            Binding(str(n), f"rank({n})", str(n), id=f"compare.rank_{n}", group=RANK_GROUP,
                    tooltip=f"Place reply {n} next in the ranking (best first)")
            for n in range(1, MAX_COMPARE + 1)
        ],
        Binding("backspace", "undo", "Undo rank", id="compare.undo"),
        Binding("x", "not_rankable", "Not rankable", id="compare.not_rankable"),
        Binding("escape", "stop_or_close", "Stop / close", id="compare.close"),
    ]

    class Delta(Message):
        def __init__(self, index: int, text: str) -> None:
            super().__init__()
            self.index = index
            self.text = text

    def __init__(self, services: AppServices, parent_id: int, context: list[dict[str, str]], settings: ChatSettings,
                 shown_id: int | None = None) -> None:
        """shown_id: the reply shown when compare opened; closing without a ranking shows it again."""
        super().__init__()
        self.services = services
        self.parent_id = parent_id
        self.shown_id = shown_id
        self.context = context
        self.k = settings.compare_k
        self.request = ReplyStream(context, settings.sampling_params(n=self.k))  # one request, k replies
        self.reply_ids: list[int] = []  # stored alternatives, in column order
        self.order: list[int] = []  # column numbers, best first
        self.output: Any = None  # the engine's RequestOutput: one request, k completions

    def compose(self) -> ComposeResult:
        prompt = self.context[-1]["content"]
        title = Text(f"Compare {self.k} replies to: ")
        title.append(prompt[:120], style="bold")
        yield Static(title, id="compare-title")
        with Horizontal(id="alternatives"):
            for number in range(1, self.k + 1):
                yield AlternativeView(number)
        yield Static("Writing… (Esc stops)", id="compare-hint")
        yield Footer(show_command_palette=False)

    @property
    def views(self) -> list[AlternativeView]:
        return list(self.query(AlternativeView))

    def on_mount(self) -> None:
        self.markdown_streams = [view.start_stream() for view in self.views]
        self._generate()

    @work(thread=True, group="compare", exit_on_error=False)
    def _generate(self) -> Any:
        return self.request.run(
            self.services.model, lambda index, text: self.post_message(self.Delta(index, text)), get_current_worker()
        )

    @on(Delta)
    async def _delta(self, event: Delta) -> None:
        await self.markdown_streams[event.index].write(event.text)
        self.views[event.index].count_progress()

    @on(Worker.StateChanged)
    async def _finished(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "compare":
            return
        if event.state == WorkerState.SUCCESS:
            await self._store(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.notify(f"Compare failed: {describe_error(event.worker.error)}", severity="error", timeout=10)
            self.dismiss(None)

    async def _store(self, output: Any) -> None:
        self.output = output
        for stream in self.markdown_streams:
            await stream.stop()
        completions = sorted(output.completions, key=lambda c: c.index)
        sampling = self.request.sampling_record()
        for view, completion in zip(self.views, completions):
            await view.body.update(completion.text)
            view.set_finish_reason(completion.finish_reason)
        replies = [GeneratedReply(c.text, c.finish_reason, sampling) for c in completions]
        version_id = self.services.model.require().version_id
        stored = self.services.session.save_replies(self.parent_id, replies, version_id, show_index=None)
        self.reply_ids = [message.id for message in stored]
        self.refresh_bindings()  # the rank keys apply from now on
        self._hint()

    def _hint(self) -> None:
        if not self.reply_ids:
            return
        placed = ", ".join(str(n) for n in self.order) or "none yet"
        self.query_one("#compare-hint", Static).update(
            f"Press the number of the best reply, then the next best… (placed: {placed}). "
            "x: not rankable · backspace: undo · Esc: close without ranking"
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "rank":
            # Keys for columns that do not exist (k < 4) are hidden and do nothing.
            return bool(self.reply_ids) and int(parameters[0]) <= self.k  # type: ignore[arg-type]
        if action in ("undo", "not_rankable"):
            return bool(self.reply_ids)
        return True

    def action_rank(self, number: int) -> None:
        if number in self.order:
            self.notify(f"{number} is already ranked #{self.order.index(number) + 1}; backspace undoes.", timeout=2)
            return
        self.order.append(number)
        self.views[number - 1].set_rank(len(self.order))
        if len(self.order) == self.k - 1:
            last = next(n for n in range(1, self.k + 1) if n not in self.order)
            self.order.append(last)
            self.views[last - 1].set_rank(self.k)
        if len(self.order) == self.k:
            self._save_ranking()
        else:
            self._hint()

    def _save_ranking(self) -> None:
        best_first = [self.reply_ids[n - 1] for n in self.order]
        self.services.session.rank(self.parent_id, best_first)
        self.services.session.show(best_first[0])
        self.notify(f"Ranking saved: {' > '.join(str(n) for n in self.order)}.", timeout=3)
        self.dismiss(best_first[0])

    def action_undo(self) -> None:
        if self.order:
            number = self.order.pop()
            self.views[number - 1].set_rank(None)
            self._hint()

    def action_not_rankable(self) -> None:
        self.services.session.mark_not_rankable(self.parent_id)
        self.notify("Marked as not rankable.", timeout=3)
        self.dismiss(self._show_previous())

    def action_stop_or_close(self) -> None:
        if not self.reply_ids:
            self.request.stop()
            return
        self.notify("Closed without ranking; the replies are kept as siblings.", timeout=3)
        self.dismiss(self._show_previous())

    def _show_previous(self) -> int:
        """Show the reply that was shown before compare opened (none was chosen here, and
        an alternative may be a stopped fragment the next message would continue from)."""
        shown = self.shown_id if self.shown_id is not None else self.reply_ids[0]
        self.services.session.show(shown)
        return shown

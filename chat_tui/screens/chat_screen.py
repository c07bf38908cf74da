"""The main screen: conversations on the left, the chat on the right, status and keys below.

What happens here: sending a message and streaming the reply into the chat log (in a
thread worker that reads the engine's token stream and posts deltas; Esc cancels the
stream) and loading the model. The keys on a focused reply are ReplyFeedback's
(screens/reply_feedback.py), the conversations and other screens ConversationActions'
(screens/conversation_actions.py), the arena and following training runs ArenaMode's
(screens/arena_mode.py). The store writes themselves are ChatSession's; loading the model
is the ModelService's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.widgets.markdown import MarkdownStream
from textual.worker import Worker, WorkerState, get_current_worker

from chat_tui.errors import describe_error
from chat_tui.screens.arena_mode import ArenaMode
from chat_tui.screens.conversation_actions import ConversationActions
from chat_tui.screens.reply_feedback import ReplyFeedback
from chat_tui.services.app_services import AppServices
from chat_tui.services.chat_session import GeneratedReply
from chat_tui.services.model_service import ServingModel
from chat_tui.services.reply_stream import ReplyStream
from chat_tui.services.turns import Turn
from chat_tui.widgets.chat_log import ChatLog
from chat_tui.widgets.conversation_list import ConversationList
from chat_tui.widgets.message_view import MessageView
from chat_tui.widgets.prompt_input import PromptInput
from chat_tui.widgets.status_line import StatusLine


@dataclass
class ReplyJob:
    """One reply being written: what it answers, where it streams, the request itself."""

    parent_id: int
    view: MessageView
    request: ReplyStream
    started_at: float = 0.0
    num_events: int = 0
    markdown: MarkdownStream | None = field(default=None, repr=False)


class ChatScreen(ReplyFeedback, ConversationActions, ArenaMode, Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop", priority=True, tooltip="Stop the reply being written"),
        Binding("ctrl+n", "new_conversation", "New chat", id="chat.new"),
        Binding("ctrl+f", "search", "Search", id="chat.search", tooltip="Search every conversation"),
        Binding("f2", "settings", "Settings", id="chat.settings", tooltip="Sampling settings and compare k"),
        Binding("f3", "system_prompt", "System prompt", id="chat.system_prompt", show=False),
        Binding("f4", "models", "Models", id="chat.models", tooltip="Model versions: lineage, metrics, switch"),
        Binding("f5", "training", "Train", id="chat.training", tooltip="Train on your feedback"),
        # Priority: the prompt box (a TextArea) binds F6 and F7 to select line / select all.
        Binding("f6", "arena", "Arena", id="chat.arena", priority=True,
                tooltip="Two versions answer each prompt, blind; F6 again ends it"),
        Binding("f7", "toggle_sidebar", "Sidebar", id="chat.sidebar", priority=True,
                tooltip="Hide or show the conversation list"),
        Binding("f8", "export_markdown", "Export", id="chat.export", show=False,
                tooltip="Write this conversation to a Markdown file"),
    ]

    class LoadProgress(Message):
        def __init__(self, number: int, label: str, detail: str) -> None:
            super().__init__()
            self.number, self.label, self.detail = number, label, detail

    class LoadFinished(Message):
        def __init__(self, number: int, serving: ServingModel | None, error: BaseException | None) -> None:
            super().__init__()
            self.number, self.serving, self.error = number, serving, error

    class ReplyDelta(Message):
        def __init__(self, job: ReplyJob, text: str) -> None:
            super().__init__()
            self.job = job
            self.text = text

    def __init__(self, services: AppServices) -> None:
        super().__init__()
        self.services = services
        self.session = services.session
        self.job: ReplyJob | None = None  # the reply being written, if any
        self.queued: ReplyJob | None = None  # a reply waiting for the model to load
        self.code_block_index: dict[int, int] = {}
        self.last_output: Any = None  # the engine's RequestOutput of the latest reply

    # ---- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield ConversationList(id="sidebar")
            with Vertical(id="chat"):
                yield Static("New conversation", id="chat-title")
                yield ChatLog(id="log")
                yield PromptInput(id="prompt")
                yield StatusLine(id="status")
        yield Footer(show_command_palette=False)

    @property
    def log_view(self) -> ChatLog:
        return self.query_one("#log", ChatLog)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one("#prompt", PromptInput)

    @property
    def status(self) -> StatusLine:
        return self.query_one("#status", StatusLine)

    async def on_mount(self) -> None:
        self.refresh_sidebar()
        self.prompt.focus()
        if self.services.should_load_model:
            self.load_model(self.services.requested_model)
        else:
            self.status.state = "none"
        if self.services.arena_request is not None:
            self.start_arena(*self.services.arena_request)
        self.follow_training()
        self.set_interval(1.0, self.follow_training)

    # ---- model loading --------------------------------------------------------------------

    def load_model(self, requested: str | None = None, version_id: int | None = None) -> None:
        """Load a model version in the background; the window stays usable meanwhile."""
        if self.job is not None:
            self.notify("Wait for the reply to finish (or Esc) before switching models.", severity="warning")
            return
        self.status.state = "loading"
        self.status.detail = ""
        self.status.model_label = requested or ""
        self.services.model.load_in_background(
            self.services.store, requested, version_id, self.services.device, self.services.quant,
            on_progress=lambda number, label, detail: self.post_message(self.LoadProgress(number, label, detail)),
            on_finished=lambda number, serving, error: self.post_message(self.LoadFinished(number, serving, error)),
        )

    @on(LoadProgress)
    def _show_loading(self, event: LoadProgress) -> None:
        if event.number == self.services.model.num_loads:  # not a load superseded by a later switch
            self.status.model_label = event.label
            self.status.detail = event.detail

    @on(LoadFinished)
    def _load_finished(self, event: LoadFinished) -> None:
        if not self.services.model.finish_load(event.number, event.serving):
            return  # superseded by a later switch
        if event.serving is not None:
            self._model_loaded(event.serving)
        else:
            self._model_failed(event.error)

    def _model_loaded(self, serving: ServingModel) -> None:
        self.status.model_label = serving.label
        self.status.state = "ready"
        self.status.tokens_per_s = None
        self.notify(f"{serving.label} is ready.", timeout=3)
        if self.queued is not None:
            job, self.queued = self.queued, None
            self._run_job(job)

    def _model_failed(self, error: BaseException) -> None:
        self.status.state = "failed"
        self.status.detail = describe_error(error)
        self.notify(f"Could not load the model: {describe_error(error)}", severity="error", timeout=10)
        if self.queued is not None:
            job, self.queued = self.queued, None
            self.call_later(self._drop_job, job, "no model to answer with")

    # ---- sending and streaming ------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def _send(self, event: PromptInput.Submitted) -> None:
        if self.job is not None or self.queued is not None:
            self.notify("A reply is still being written: wait, or press Esc to stop it.", severity="warning")
            return
        if not self.services.model.is_ready and not self.services.model.is_loading:
            self.notify("No model is loaded (F4 picks one); the message was not sent.", severity="error")
            return
        message = self.session.send(event.text)
        self.prompt.clear()
        if self.session.tree is None or self.session.tree.conversation.id != message.conversation_id:
            self.refresh_sidebar()
        self._set_title()
        if self.services.arena.is_on:
            await self.send_to_arena(message)
            return
        log = self.log_view
        await log.mount(MessageView(Turn(role="user", content=message.content, message_id=message.id)))
        await self._start_reply(message.id)

    async def _start_reply(self, parent_id: int) -> None:
        view = MessageView(Turn(role="assistant", content="", parent_id=parent_id), is_streaming=True)
        log = self.log_view
        await log.mount(view)
        log.anchor()
        params = self.services.settings.load().sampling_params()
        if params.seed is not None:
            # A fixed seed keeps replies reproducible, yet a regeneration must differ from its siblings.
            params.seed += self.session.num_replies(parent_id)
        job = ReplyJob(parent_id, view, ReplyStream(self.session.context_for(parent_id), params))
        if self.services.model.is_ready:
            self._run_job(job)
        else:
            self.queued = job
            view.query_one(".message-header", Static).update("Assistant · waiting for the model to load…")

    def _run_job(self, job: ReplyJob) -> None:
        self.job = job
        job.started_at = perf_counter()
        job.markdown = job.view.start_stream()
        self.status.state = "generating"
        self.status.tokens_per_s = None
        self.refresh_bindings()  # Esc now stops the reply: show it in the footer
        self._reply_worker(job)

    @work(thread=True, group="reply", exit_on_error=False)
    def _reply_worker(self, job: ReplyJob) -> Any:
        return job.request.run(
            self.services.model, lambda _index, text: self.post_message(self.ReplyDelta(job, text)), get_current_worker()
        )

    @on(ReplyDelta)
    async def _delta(self, event: ReplyDelta) -> None:
        job = event.job
        job.num_events += 1
        if job.markdown is not None:
            await job.markdown.write(event.text)
        elapsed = perf_counter() - job.started_at
        if elapsed > 0.5:
            self.status.tokens_per_s = job.num_events / elapsed
            self.status.num_tokens = job.num_events

    async def _reply_done(self, job: ReplyJob, output: Any) -> None:
        self.job = None
        self.refresh_bindings()
        self.last_output = output
        if job.markdown is not None:
            await job.markdown.stop()
        completion = output.completions[0]
        await job.view.set_content(completion.text)
        saved = self.session.save_replies(
            job.parent_id,
            [GeneratedReply(completion.text, completion.finish_reason, job.request.sampling_record())],
            self.services.model.require().version_id,
        )[0]
        turn = next((t for t in self.session.turns() if t.message_id == saved.id), None)
        if turn is not None:
            job.view.set_turn(turn)
        self.status.state = "ready"
        self.status.tokens_per_s = output.tokens_per_s
        self.status.num_tokens = output.num_generated_tokens
        if completion.finish_reason == "abort":
            self.notify("Stopped. What was written is kept and marked as stopped.", timeout=3)
        self.refresh_sidebar()

    async def _reply_failed(self, job: ReplyJob, error: BaseException) -> None:
        self.job = None
        self.refresh_bindings()
        if job.markdown is not None:
            await job.markdown.stop()
        self.status.state = "ready" if self.services.model.is_ready else "failed"
        await self._drop_job(job, describe_error(error))

    async def _drop_job(self, job: ReplyJob, reason: str) -> None:
        await job.view.remove()
        self.notify(f"No reply: {reason}. Your message is kept; send again to retry.", severity="error", timeout=10)

    def action_stop(self) -> None:
        if self.job is not None:
            self.job.request.stop()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            # Only while a reply is written: otherwise Esc belongs to the focused widget.
            return self.job is not None
        return True

    @on(Worker.StateChanged)
    async def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker, state = event.worker, event.state
        if worker.group == "reply" and self.job is not None:
            if state == WorkerState.SUCCESS:
                await self._reply_done(self.job, worker.result)
            elif state == WorkerState.ERROR:
                await self._reply_failed(self.job, worker.error)

    # ---- the chat log ----------------------------------------------------------------------

    async def show_conversation(self, focus_id: int | None = None) -> None:
        """Render the shown path of the open conversation; focus a reply if asked."""
        log = self.log_view
        turns = self.session.turns()
        await log.remove_children()
        await log.mount_all([MessageView(turn) for turn in turns])
        self._set_title()
        if focus_id is not None:
            for view in log.replies:
                if view.turn.message_id == focus_id:
                    view.focus()
                    view.scroll_visible(animate=False)
                    break
        else:
            log.scroll_end(animate=False)

    def refresh_headers(self) -> None:
        """Show fresh ratings and sibling counts on every reply, keeping the text."""
        fresh = {turn.message_id: turn for turn in self.session.turns()}
        for view in self.log_view.query(MessageView):
            turn = fresh.get(view.turn.message_id)
            if turn is not None:
                view.set_turn(turn)

    def _set_title(self) -> None:
        title = Text(self.session.title, style="bold")
        if self.session.system_prompt:
            title.append("  (system prompt set)", style="dim")
        self.query_one("#chat-title", Static).update(title)

    @on(PromptInput.LeaveUp)
    def _to_replies(self) -> None:
        if not self.log_view.focus_latest_reply():
            self.notify("No reply yet to act on.", timeout=2)

    @on(ChatLog.BackToPrompt)
    def _to_prompt(self) -> None:
        self.prompt.focus()

    # ---- feedback on a reply -----------------------------------------------------------

    @on(ChatLog.ReplyCommand)
    async def _reply_command(self, event: ChatLog.ReplyCommand) -> None:
        await self.run_reply_command(event.command, event.turn)

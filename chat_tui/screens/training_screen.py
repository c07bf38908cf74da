"""Training inside the app: how much feedback there is since the last run, starting
`chat-tui train` as a background process, its live progress (phase, step, reward, KL, a
small reward plot), and on success an offer to switch to the new version.

The process belongs to AppServices, not to this screen: closing the screen (Esc) leaves
training running while you chat, and opening it again shows where it is. The screen
dismisses with the id of a version to switch to, or None.
"""

from __future__ import annotations

import shlex
from typing import Any

from rich.text import Text
from textual import on
from textual.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Log, ProgressBar, Select, Sparkline, Static

from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.services.app_services import AppServices
from chat_tui.services.training_process import TrainingProcess, TrainingProgress
from trainer.algorithms import DEFAULT_ALGORITHM, menu_choices

METHODS: list[tuple[str, str]] = menu_choices()


def counts_text(counts: Any, last_run: Any) -> str:
    since = f"since run {last_run.id} ({last_run.kind}, {last_run.finished_at or last_run.started_at})" if last_run else "in total (no training yet)"
    return (
        f"[b]New feedback {since}[/b]\n"
        f"  ratings {counts.num_ratings} · rankings {counts.num_rankings} · "
        f"taught replies {counts.num_demonstrations} · preference pairs {counts.num_new_pairs}\n"
        f"  prompts {counts.num_user_messages} · model replies {counts.num_replies}"
    )


def progress_text(progress: TrainingProgress, state: str) -> str:
    parts = [f"[b]{state}[/b]"]
    if progress.phase:
        parts.append(f"phase [b]{escape(progress.phase)}[/b] step {progress.step}/{progress.total or '?'}")
    if progress.reward is not None:
        parts.append(f"reward {progress.reward:.4g}")
    if progress.kl is not None:
        parts.append(f"KL {progress.kl:.4g}")
    return "  ·  ".join(parts)


class TrainingScreen(Screen[int | None]):
    BINDINGS = [
        Binding("s", "start", "Start training", id="training.start"),
        Binding("x", "cancel", "Cancel training", id="training.cancel"),
        Binding("escape", "close", "Back to chat", id="training.close"),
    ]

    def __init__(self, services: AppServices) -> None:
        super().__init__()
        self.services = services
        self.shown_lines = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="training"):
            yield Static("Training", classes="screen-title")
            yield Static("", id="feedback-counts")
            with Horizontal(id="training-options"):
                yield Label("Method ")
                yield Select(METHODS, value=DEFAULT_ALGORITHM, allow_blank=False, id="method")
                yield Label(" Options ")
                yield Input(placeholder="more `chat-tui train` options, e.g. --steps 8 --full", id="train-options")
            yield Static("", id="training-state")
            yield ProgressBar(id="training-progress", show_eta=False)
            with Horizontal(id="training-plots"):
                with Vertical():
                    yield Label("reward")
                    yield Sparkline([], id="reward-plot")
                with Vertical():
                    yield Label("KL")
                    yield Sparkline([], id="kl-plot")
            yield Log(id="training-log", max_lines=300)
        yield Footer(show_command_palette=False)

    @property
    def process(self) -> TrainingProcess | None:
        return self.services.training

    def on_mount(self) -> None:
        self.query_one("#method", Select).focus()
        self.refresh_counts()
        self.refresh_progress()
        self.set_interval(0.25, self.refresh_progress)

    def refresh_counts(self) -> None:
        store = self.services.store
        self.query_one("#feedback-counts", Static).update(
            counts_text(store.counts_since_last_training(), store.last_training_run())
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        running = self.process is not None and self.process.returncode is None
        if action == "start":
            return not running
        if action == "cancel":
            return running
        return True

    def action_start(self) -> None:
        method = self.query_one("#method", Select).value
        try:
            extra = shlex.split(self.query_one("#train-options", Input).value)
        except ValueError as error:
            self.notify(f"Cannot read the options: {error}", severity="error")
            return
        # JSON progress lines: the screen's parser needs no guessing at console bars.
        self.services.start_training(["--algo", str(method), "--progress-json", *extra])
        self.shown_lines = 0
        self.query_one("#training-log", Log).clear()
        self.notify(f"Training ({method}) started in the background; the chat stays usable.", timeout=4)
        self.refresh_bindings()
        self.refresh_progress()

    def action_cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()
            self.notify("Stopping training…", timeout=3)

    def action_close(self) -> None:
        self.dismiss(None)

    def refresh_progress(self) -> None:
        process = self.process
        self.query_one("#training-progress").display = process is not None
        if process is None:
            self.query_one("#training-state", Static).update("[b]Not running.[/b] Press s to start.")
            return
        progress = process.snapshot()
        code = process.returncode
        state = "Running" if code is None else ("Finished" if code == 0 else f"Failed (exit {code})")
        self.query_one("#training-state", Static).update(progress_text(progress, state))
        bar = self.query_one("#training-progress", ProgressBar)
        bar.update(total=progress.total or None, progress=progress.step)
        self.query_one("#reward-plot", Sparkline).data = progress.rewards
        self.query_one("#kl-plot", Sparkline).data = progress.kls
        log = self.query_one("#training-log", Log)
        log.write_lines(progress.log[self.shown_lines :])
        self.shown_lines = len(progress.log)
        if code is not None and not self.services.switch_offered:
            self.services.switch_offered = self.services.training_announced = True
            self.refresh_bindings()
            self.refresh_counts()
            self._finished(code, progress)

    def _finished(self, code: int, progress: TrainingProgress) -> None:
        if code != 0:
            self.notify("Training failed; the log shows why. Your current model is unchanged.", severity="error", timeout=10)
            return
        version_id = self.services.trained_version_id(progress)
        if version_id is None:
            self.notify("Training finished without a new model version.", severity="warning", timeout=6)
            return
        name = self.services.store.get_model_version(version_id).name

        def answer(yes: bool | None) -> None:
            if yes:
                self.dismiss(version_id)

        self.app.push_screen(ConfirmScreen(Text(f"Training finished: switch the chat to {name}?"), "Switch"), answer)

    @on(Input.Submitted, "#train-options")
    def _options_submitted(self) -> None:
        if self.check_action("start", ()):
            self.action_start()

    @on(Select.Changed, "#method")
    def _method_changed(self) -> None:
        self.refresh_bindings()

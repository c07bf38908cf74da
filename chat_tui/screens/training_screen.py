"""Training inside the app: the feedback there is since the last run and the minimum a run
needs, starting `chat-tui train` as a background process, its live progress (phase, step,
an ETA counted from the steps done in this run, reward, KL, a small reward plot, the log),
and cancelling it (asked first; the trainer records a cancelled run and resumes it when
started again with the same settings).

The process belongs to AppServices, not to this screen: closing the screen (Esc) leaves
training running while you chat, and opening it again shows where it is. A run started
from a shell shows here too, read from the store. When a run succeeds the chat offers to
try the new version blind in the arena (screens/arena_mode.py).
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
from textual.widgets import Footer, Input, Label, ProgressBar, RichLog, Select, Sparkline, Static

from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.services.app_services import AppServices
from chat_tui.services.training_process import TrainingProcess, TrainingProgress
from trainer.algorithms import DEFAULT_ALGORITHM, get_algorithm, menu_choices
from trainer.progress import format_duration
from trainer.settings import MIN_DEMONSTRATIONS, MIN_PAIRS, MIN_PROMPTS

METHODS: list[tuple[str, str]] = menu_choices()
CANCELLED_EXIT = 143  # the trainer's exit status for a run stopped by SIGTERM and recorded as cancelled


def needs_text(algo: str, counts: dict[str, int]) -> str:
    """What a run of `algo` needs at least, beside what the store holds (all of it)."""
    algorithm = get_algorithm(algo)
    pairs, demos, prompts = counts["preference_pairs"], counts["demonstrations"], counts["prompts"]
    mark = lambda have, need: "✓" if have >= need else "✗"  # noqa: E731
    text = (f"[b]To train[/b] {algorithm.name.upper()} needs at least {MIN_PAIRS} preference pairs "
            f"{mark(pairs, MIN_PAIRS)} (you have {pairs}), or {MIN_DEMONSTRATIONS} taught or up-voted replies for "
            f"SFT alone {mark(demos, MIN_DEMONSTRATIONS)} (you have {demos})")
    if algorithm.needs_prompts:
        text += f", and {MIN_PROMPTS} prompts to practise on {mark(prompts, MIN_PROMPTS)} (you have {prompts})"
    return text + "; a few are held out to check the result."


def run_state(code: int | None) -> str:
    if code is None:
        return "Running"
    if code == 0:
        return "Finished"
    if code == CANCELLED_EXIT:
        return "Cancelled (resumable: start it again with the same method and options)"
    if code == -9:
        return "Killed (it did not stop within 10 s); resumable from its last checkpoint"
    return f"Failed (exit {code})"


def counts_text(counts: Any, last_run: Any) -> str:
    since = f"since run {last_run.id} ({last_run.kind}, {last_run.finished_at or last_run.started_at})" if last_run else "in total (no training yet)"
    return (
        f"[b]New feedback {since}[/b]\n"
        f"  ratings {counts.num_ratings} · rankings {counts.num_rankings} · "
        f"taught replies {counts.num_demonstrations} · preference pairs {counts.num_new_pairs}\n"
        f"  prompts {counts.num_user_messages} · model replies {counts.num_replies}"
    )


def progress_text(progress: TrainingProgress, state: str) -> str:
    parts = [f"[b]{escape(state)}[/b]"]
    if progress.phase:
        parts.append(f"phase [b]{escape(progress.phase)}[/b] step {progress.step}/{progress.total or '?'}")
        eta = progress.eta_s
        if state == "Running" and eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
    if progress.reward is not None:
        parts.append(f"reward {progress.reward:.4g}")
    if progress.kl is not None:
        parts.append(f"KL {progress.kl:.4g}")
    return "  ·  ".join(parts)


class TrainingScreen(Screen[None]):
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
            yield Static("", id="training-needs")
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
            # Wrapped, so a long line (the trainer's reasons) is read whole.
            yield RichLog(id="training-log", max_lines=300, wrap=True, markup=False, highlight=False, min_width=20)
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
        method = str(self.query_one("#method", Select).value)
        self.query_one("#training-needs", Static).update(needs_text(method, store.stats().counts))

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
        self.query_one("#training-log", RichLog).clear()
        self.notify(f"Training ({method}) started in the background; the chat stays usable.", timeout=4)
        self.refresh_bindings()
        self.refresh_progress()

    def action_cancel(self) -> None:
        process = self.process
        if process is None:
            return

        def answer(yes: bool | None) -> None:
            if yes and process.returncode is None:
                process.cancel()
                self.notify("Stopping training after its current step…", timeout=4)

        question = Text("Cancel training? It stops after the current step and is recorded as cancelled; "
                        "starting it again with the same method and options resumes it from its last checkpoint.")
        self.app.push_screen(ConfirmScreen(question, "Cancel training"), answer)

    def action_close(self) -> None:
        self.dismiss(None)

    def refresh_progress(self) -> None:
        process = self.process
        self.query_one("#training-progress").display = process is not None
        if process is None:
            shell = self.services.shell_training_run()
            if shell is not None:
                self.query_one("#training-state", Static).update(
                    f"[b]Running (started outside the app)[/b]: run {shell.id} ({escape(shell.kind)}), since "
                    f"{shell.started_at[11:16]} UTC. Its progress shows where it was started; this screen and the "
                    f"status line follow it in the store.")
            else:
                self.query_one("#training-state", Static).update("[b]Not running.[/b] Press s to start.")
            return
        progress = process.snapshot()
        code = process.returncode
        self.query_one("#training-state", Static).update(progress_text(progress, run_state(code)))
        bar = self.query_one("#training-progress", ProgressBar)
        bar.update(total=progress.total or None, progress=progress.step)
        self.query_one("#reward-plot", Sparkline).data = progress.rewards
        self.query_one("#kl-plot", Sparkline).data = progress.kls
        log = self.query_one("#training-log", RichLog)
        for line in progress.log[self.shown_lines :]:
            log.write(line)
        self.shown_lines = len(progress.log)
        if code is not None and not self.services.training_announced:
            self.services.training_announced = True
            self.refresh_bindings()
            self.refresh_counts()
            if code == 0 and self.services.trained_version_id(progress) is None:
                self.notify("Training finished without a new model version.", severity="warning", timeout=6)
            elif code not in (0, CANCELLED_EXIT):
                self.notify("Training failed; the log shows why. Your current model is unchanged.", severity="error",
                            timeout=10)

    @on(Input.Submitted, "#train-options")
    def _options_submitted(self) -> None:
        if self.check_action("start", ()):
            self.action_start()

    @on(Select.Changed, "#method")
    def _method_changed(self) -> None:
        self.refresh_bindings()
        self.refresh_counts()

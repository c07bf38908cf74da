"""Arena mode in the chat, and what the chat says about training runs.

F6 (or `chat-tui --arena A B`) opens the arena on two versions: from then on each prompt
you send is answered by both, blind, in an ArenaScreen round, until F6 ends it; the end
shows your verdict beside the trainer's held-out measure and asks which version to use.

When a training run finishes, from the app or from a shell (read from the store), the
chat offers to put the new version against its parent in the arena for the next
prompts, so "is it better for me?" gets answered by you, blind. The status line says
while a run is training (and slowing replies down) and while the arena is on.

`ArenaMode` is mixed into ChatScreen; it lives apart only to keep each file readable.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.message import Message

from chat_tui.errors import describe_error, user_error_types
from chat_tui.screens.arena_screen import ArenaScreen
from chat_tui.screens.arena_setup_screen import ArenaSetupScreen, default_pair
from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.screens.training_screen import TrainingScreen
from chat_tui.screens.verdict_screen import VerdictScreen
from chat_tui.services.arena import check_pair
from chat_tui.services.versions import headline

OFFERED_SETTING = "arena.offered_through_run"  # the newest training run the chat has offered


class ArenaMode:
    """Mixin for ChatScreen: the arena, and following training runs."""

    class ArenaLoaded(Message):
        def __init__(self, error: BaseException | None) -> None:
            super().__init__()
            self.error = error

    # ---- opening and closing the arena -------------------------------------------------------

    def action_arena(self) -> None:
        """F6: open the arena (picking two versions), or end it."""
        arena = self.services.arena
        if arena.is_on:
            self.end_arena()
            return
        versions = self.services.store.list_model_versions()
        if default_pair(versions) is None:
            self.notify("The arena needs two model versions: train one first (F5).", severity="warning")
            return

        def picked(pair: tuple[int, int] | None) -> None:
            if pair is not None:
                self.start_arena(*pair)

        self.app.push_screen(ArenaSetupScreen(versions), picked)

    def start_arena(self, first: int | str, second: int | str, from_run: int | None = None) -> None:
        if self.job is not None:
            self.notify("Wait for the reply to finish (or Esc) before opening the arena.", severity="warning")
            return
        try:
            versions = check_pair(self.services.store, first, second)
        except user_error_types() as error:  # not a version, or a removed one: say so, change nothing
            self.notify(f"No arena: {describe_error(error)}", severity="error", timeout=8)
            return
        self.services.arena.start(self.services.store, *versions, self.services.device,
                                  lambda error: self.post_message(self.ArenaLoaded(error)), from_run=from_run)
        self.status.arena = "loading both versions…"
        self.notify(f"Arena: {versions[0].name} against {versions[1].name}. Your next prompts get two blind "
                    f"replies; F6 ends it.", timeout=6)

    def on_arena_mode_arena_loaded(self, event: ArenaLoaded) -> None:  # by name: @on skips mixins
        if event.error is not None:
            self.status.arena = ""
            self.notify(f"The arena could not load its models: {describe_error(event.error)}", severity="error",
                        timeout=10)
            return
        self._show_arena_status()

    def _show_arena_status(self) -> None:
        arena = self.services.arena
        self.status.arena = f"{arena.num_choices} chosen, F6 ends" if arena.is_on else ""

    def end_arena(self) -> None:
        arena = self.services.arena
        pair = arena.pair
        arena.stop()
        self.status.arena = ""
        if pair is None:
            return
        store = self.services.store
        first, second = (store.get_model_version(version_id) for version_id in pair)
        wins = store.head_to_head(first.id, second.id)
        if not any(wins):
            self.notify("Arena closed; no choice was made.", timeout=3)
            return
        active = store.active_model_version()

        def use(version_id: int | None) -> None:
            if version_id is None:
                self.notify("Nothing changed: chat-tui models activate NAME (or F4) switches later.", timeout=5)
            elif active is None or version_id != active.id:
                store.activate_model_version(version_id)
                self.load_model(version_id=version_id)
            else:
                self.notify(f"{active.name} stays in use.", timeout=3)

        self.app.push_screen(VerdictScreen(first, second, wins, active.id if active else None), use)

    async def send_to_arena(self, message: Any) -> None:
        """An arena round for the user message just sent; the chat then shows the winner."""
        if not self.services.arena.is_ready:
            self.notify("The arena's models are still loading; the message was sent and waits for a reply "
                        "(r regenerates once they are ready, or F6 ends the arena).", severity="warning", timeout=6)
            await self.show_conversation()
            return
        screen = ArenaScreen(self.services, message.id, self.session.context_for(message.id))

        async def done(shown_id: int | None) -> None:
            self._show_arena_status()
            await self.show_conversation(focus_id=shown_id)
            self.prompt.focus()

        self.app.push_screen(screen, done)

    # ---- following training runs -----------------------------------------------------------------

    def follow_training(self) -> None:
        """Called every second: the status line's training note, and the arena offer for a
        run that finished (from the app or a shell)."""
        services = self.services
        process = services.training
        if services.is_training:
            progress = process.snapshot()
            self.status.training = f"{progress.phase} {progress.step}/{progress.total}" if progress.phase else "(starting)"
        else:
            shell = services.shell_training_run()
            self.status.training = f"run {shell.id} ({shell.kind}, from a shell)" if shell is not None else ""
        if services.is_training:
            return  # the run is in the store before the process ends: offer once it has ended
        if process is not None and process.returncode is not None and not services.training_announced:
            if isinstance(self.app.screen, TrainingScreen):
                return  # it shows the end itself first; the offer comes on a later tick
            services.training_announced = True
            if process.returncode != 0:
                self.notify("Training stopped: F5 shows its log and whether it can be resumed.", severity="warning",
                            timeout=10)
        if isinstance(self.app.screen, (type(self), TrainingScreen)):
            self._offer_new_version()

    def _offer_new_version(self) -> None:
        store = self.services.store
        last = store.last_training_run(status=None)
        offered = store.get_setting(OFFERED_SETTING)
        if offered is None:  # the first time: runs from before are not news
            store.set_setting(OFFERED_SETTING, last.id if last is not None else 0)
            return
        run = store.last_training_run(status="succeeded")
        if run is None or run.id <= offered or run.result_version_id is None:
            return
        store.set_setting(OFFERED_SETTING, run.id)
        self.services.training_announced = True
        new = store.get_model_version(run.result_version_id)
        if new.parent_id is None or self.services.arena.is_on:
            self.notify(f"Training made {new.name}: F4 shows it.", timeout=8)
            return
        parent = store.get_model_version(new.parent_id)
        question = Text(f"Training run {run.id} made {new.name} from {parent.name}.\n", style="bold")
        for line in headline(new):
            question.append(f"  {line}\n", style="")
        question.append(f"\nIs it better for you? Try it against {parent.name} in the arena: your next prompts "
                        "get one reply from each, blind, and you pick.", style="")

        def answer(yes: bool | None) -> None:
            if yes:
                if isinstance(self.app.screen, TrainingScreen):
                    self.app.pop_screen()
                self.start_arena(new.id, parent.id, from_run=run.id)

        self.app.push_screen(ConfirmScreen(question, "Try it blind"), answer)

"""What the app's screens share: the store, the open chat session, the model, the arena,
settings, and the training run.

Built once by `open_chat` (or a test) and handed down to screens; screens never open the
store or load a model by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chat_tui.errors import UserError
from chat_tui.services.arena import ArenaService
from chat_tui.services.chat_session import ChatSession
from chat_tui.services.model_service import ModelService
from chat_tui.services.settings_store import SettingsStore
from chat_tui.services.training_process import TrainingProcess, TrainingProgress, train_command


@dataclass
class AppServices:
    store: Any  # feedback.Store
    requested_model: str | None = None
    device: str = "cpu"  # where every model the chat loads runs
    quant: str = "none"  # the weights it decodes from (chat_tui/quant_choice.py)
    should_load_model: bool = True  # False in UI-only tests
    arena_request: tuple[str, str] | None = None  # `chat-tui --arena A B`: open the arena on these
    session: ChatSession = field(init=False)
    model: ModelService = field(init=False)
    arena: ArenaService = field(init=False)
    settings: SettingsStore = field(init=False)
    training: TrainingProcess | None = field(init=False, default=None)
    training_announced: bool = field(init=False, default=False)  # the chat said how it ended
    runs_before_training: set[int] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.session = ChatSession(self.store)
        self.model = ModelService()
        self.arena = ArenaService(self.model, self.quant)
        self.settings = SettingsStore(self.store)

    @property
    def is_training(self) -> bool:
        """Whether this app's own training run is going."""
        return self.training is not None and self.training.returncode is None

    def shell_training_run(self) -> Any | None:
        """A run recorded as running that this app did not start (e.g. `chat-tui train` in a
        shell), or None. A run whose process died also reads "running" until the next run
        resumes or closes it."""
        if self.is_training:
            return None
        return self.store.last_training_run(status="running")

    def start_training(self, args: list[str]) -> TrainingProcess:
        """Start `chat-tui train ARGS` in the background (one run at a time)."""
        if self.training is not None and self.training.returncode is None:
            raise UserError("a training run is already in progress")
        self.runs_before_training = {run.id for run in self.store.list_training_runs()}
        self.training = TrainingProcess(train_command(args))
        self.training_announced = False
        return self.training

    def trained_version_id(self, progress: TrainingProgress) -> int | None:
        """The model version the finished run produced: as it reported, else from the store."""
        if progress.result_version_id is not None:
            return int(progress.result_version_id)
        new_runs = [run for run in self.store.list_training_runs() if run.id not in self.runs_before_training]
        for run in sorted(new_runs, key=lambda r: r.id, reverse=True):
            if run.status == "succeeded" and run.result_version_id is not None:
                return run.result_version_id
        return None

    def close(self) -> None:
        """Stop serving; a training run keeps going (it records its result in the store)."""
        self.arena.stop()
        self.model.close()
        self.store.close()


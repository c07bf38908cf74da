"""The model the chat talks to: loading it off the UI thread, and serving its replies.

`ModelService.load_in_background` chooses, loads and starts a model in a daemon thread
and reports through callbacks; the UI hands the outcome back with `finish_load` on its
own thread, which installs the model of the latest load (a later load supersedes one
still running). A daemon thread rather than a Textual worker: quitting must never wait
for a slow import or load (the model store writes through a temporary folder, so nothing
is left half written). `load_serving_model` is the blocking load itself.

The service owns the StreamingEngine: every reply of the chat, including compare mode's
k alternatives (one request with n=k, prompt prefilled once), goes through it. Which
version to load is bootstrap's job (services/bootstrap.py, shared with `chat-tui train`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from chat_tui.errors import UserError
from chat_tui.services.bootstrap import choose_model, register_loaded

if TYPE_CHECKING:
    from engine.bundle import LoadedModel
    from engine.sampling import SamplingParams
    from engine.streaming import RequestStream, StreamingEngine


class NoModelError(UserError):
    """A reply was asked for while no model is loaded (still loading, or failed)."""


@dataclass
class ServingModel:
    loaded: "LoadedModel"
    front: "StreamingEngine"
    version_id: int | None  # the feedback store's model version, when it has one
    label: str  # what the status line calls it

    @property
    def max_context(self) -> int:
        return self.loaded.config.max_position_embeddings

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids of a chat, through the model's own chat template."""
        return self.loaded.encode_chat(messages)

    def submit(self, prompt_ids: list[int], params: "SamplingParams") -> "RequestStream":
        """Start a reply (n samples in one request); max tokens are cut to fit the context."""
        room = self.max_context - len(prompt_ids)
        if room < 1:
            raise UserError(
                f"the conversation is {len(prompt_ids)} tokens, more than the model's context "
                f"of {self.max_context}; start a new conversation (ctrl+n)"
            )
        params.max_new_tokens = min(params.max_new_tokens, room)
        return self.front.submit(prompt_ids, params)


def load_serving_model(path: str | Path, version_id: int | None, label: str, device: str = "cpu",
                       quant: str = "none", share_with: ServingModel | None = None,
                       max_batch_size: int = 8) -> ServingModel:
    """Load the model at `path` (or of that name in the model store) on `device`, warm its
    engine up (which makes the quantized copy of the weights when `quant` names a type)
    and start an engine loop for it. Blocking: run in a worker.

    share_with: a model already serving; every weight the two have in common is then held
    once (engine.loading.delta.share_unchanged_weights), as for the arena's two versions
    of one base.
    max_batch_size: the most sequences at once, which sizes the KV cache: the chat's
    compare mode needs k, an arena side one."""
    from chat_tui.paths import models_dir
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.loading.delta import share_unchanged_weights
    from engine.streaming import StreamingEngine

    loaded = load_model(path, device=device, store_root=models_dir())
    if share_with is not None:
        share_unchanged_weights(loaded.model, share_with.loaded.model)
    engine = LLMEngine(loaded, max_batch_size=max_batch_size, quant=quant)
    # Here rather than in the engine loop's thread: the one-time set-up builds a probe
    # model, which must not overlap another load (see ModelService's lock).
    engine.warm_up()
    front = StreamingEngine(engine).start()
    return ServingModel(loaded=loaded, front=front, version_id=version_id, label=label)


LoadProgress = Callable[[int, str, str], None]  # (load number, model label, what is happening)
# (load number, the model, or None and why not; both None: superseded before it began)
LoadFinished = Callable[[int, "ServingModel | None", "BaseException | None"], None]


class ModelService:
    """Loads the chat's model, holds it once loaded (or none yet) and submits requests to it."""

    def __init__(self) -> None:
        self.serving: ServingModel | None = None
        self.num_loads = 0  # loads started; the latest one wins
        self.is_loading = False  # the latest load has not finished yet
        # One load at a time, warm-up included: loading builds the network under accelerate's
        # init_empty_weights, which patches torch.nn.Module for the whole process, so any
        # module built meanwhile in another thread (another load, a warm-up's probe model)
        # gets meta parameters and fails.
        self.load_lock = threading.Lock()
        # Served models another service (the arena) answers with too: a switch of the chat's
        # model leaves them running, and that service stops them when done.
        self.lent: set[int] = set()

    @property
    def is_ready(self) -> bool:
        return self.serving is not None

    def load_in_background(
        self, store: Any, requested: str | None, version_id: int | None, device: str, quant: str,
        on_progress: LoadProgress, on_finished: LoadFinished,
    ) -> int:
        """Choose, load (on `device`, decoding from weights of type `quant`) and start
        serving a model in a daemon thread; returns
        the load's number, which every callback carries. Call `finish_load` with the
        outcome on the UI thread."""
        self.num_loads += 1
        number = self.num_loads
        self.is_loading = True

        def run() -> None:
            with self.load_lock:
                if number != self.num_loads:  # superseded while it waited: no need to load it
                    on_finished(number, None, None)
                    return
                try:
                    choice = choose_model(store, requested, version_id,
                                          lambda label, detail: on_progress(number, label, detail))
                    on_progress(number, choice.label, "")
                    serving = load_serving_model(choice.path, choice.version_id, choice.label, device, quant)
                    if serving.version_id is None:
                        serving.version_id = register_loaded(store, choice, str(serving.loaded.path))
                except BaseException as error:  # handed to the UI, which shows it: a failed load is never a crash
                    on_finished(number, None, error)
                    return
                on_finished(number, serving, None)

        threading.Thread(target=run, name="model-load", daemon=True).start()
        return number

    def finish_load(self, number: int, serving: ServingModel | None) -> bool:
        """Take the outcome of load `number` (None: it failed). The latest load's model is
        installed and True returned; a superseded load's model is stopped, False returned."""
        if number != self.num_loads:
            if serving is not None:
                serving.front.stop()
            return False
        self.is_loading = False
        if serving is not None:
            self.install(serving)
        return True

    def install(self, serving: ServingModel) -> None:
        """Serve from `serving` from now on; the previous engine loop is stopped."""
        previous, self.serving = self.serving, serving
        if previous is not None and id(previous) not in self.lent:
            previous.front.stop()

    def require(self) -> ServingModel:
        if self.serving is None:
            raise NoModelError("no model is loaded yet; wait for the status line to say it is ready")
        return self.serving

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids of a chat, through the loaded model's chat template."""
        return self.require().encode(messages)

    def submit(self, prompt_ids: list[int], params: "SamplingParams") -> "RequestStream":
        """Start a reply on the loaded model (see ServingModel.submit)."""
        return self.require().submit(prompt_ids, params)

    def close(self) -> None:
        if self.serving is not None:
            self.serving.front.stop()
            self.serving = None

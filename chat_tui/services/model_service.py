"""The model the chat talks to: loading it off the UI thread, and serving its replies.

`load_serving_model` is blocking (a model takes seconds to load) and is meant for a
worker thread; it returns a `ServingModel` that the UI installs in the `ModelService`
once loading finished. The service owns the StreamingEngine: every reply of the chat,
including compare mode's k alternatives (one request with n=k, prompt prefilled once),
goes through it. Which version to load is bootstrap's job (services/bootstrap.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chat_tui.errors import UserError

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


def load_serving_model(path: str | Path, version_id: int | None, label: str, device: str = "cpu",
                       quant: str = "none") -> ServingModel:
    """Load the model at `path` (or of that name in the model store) on `device` and start
    an engine loop for it, decoding from weights of type `quant` (the engine loop's
    warm-up makes the quantized copy before the first reply; each version loaded gets
    its own). Blocking: run in a worker."""
    from chat_tui.paths import models_dir
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.streaming import StreamingEngine

    loaded = load_model(path, device=device, store_root=models_dir())
    front = StreamingEngine(LLMEngine(loaded, max_batch_size=8, quant=quant)).start()
    return ServingModel(loaded=loaded, front=front, version_id=version_id, label=label)


class ModelService:
    """Holds the serving model (or none yet) and submits chat requests to it."""

    def __init__(self) -> None:
        self.serving: ServingModel | None = None

    @property
    def is_ready(self) -> bool:
        return self.serving is not None

    def install(self, serving: ServingModel) -> None:
        """Serve from `serving` from now on; the previous engine loop is stopped."""
        previous, self.serving = self.serving, serving
        if previous is not None:
            previous.front.stop()

    def require(self) -> ServingModel:
        if self.serving is None:
            raise NoModelError("no model is loaded yet; wait for the status line to say it is ready")
        return self.serving

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids of a chat, through the model's own chat template."""
        return self.require().loaded.encode_chat(messages)

    def submit(self, prompt_ids: list[int], params: "SamplingParams") -> "RequestStream":
        """Start a reply (n samples in one request); max tokens are cut to fit the context."""
        serving = self.require()
        room = serving.max_context - len(prompt_ids)
        if room < 1:
            raise UserError(
                f"the conversation is {len(prompt_ids)} tokens, more than the model's context "
                f"of {serving.max_context}; start a new conversation (ctrl+n)"
            )
        params.max_new_tokens = min(params.max_new_tokens, room)
        return serving.front.submit(prompt_ids, params)

    def close(self) -> None:
        if self.serving is not None:
            self.serving.front.stop()
            self.serving = None

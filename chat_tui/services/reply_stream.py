"""One request to a model, read on a worker thread and stoppable from the UI.

The chat's reply, compare mode's k alternatives and each arena side go through a
`ReplyStream`: `run` (on a worker thread) encodes the context with the model's chat
template, submits one request, hands each text delta to a callback and returns the
engine's output; `stop` (on the UI thread) cancels the request, even one not submitted
yet, keeping what was written.
`sampling_record` is what the store keeps with each reply about how it was sampled.
Not here: showing the text (the screens) and storing the replies (ChatSession).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from engine.sampling import SamplingParams

if TYPE_CHECKING:
    from engine.engine import RequestOutput
    from engine.streaming import RequestStream


class Cancellable(Protocol):
    """What `run` asks of the worker it runs in (a Textual Worker is one)."""

    @property
    def is_cancelled(self) -> bool: ...


class Replier(Protocol):
    """What answers: the chat's ModelService, or one arena side's ServingModel."""

    def encode(self, messages: list[dict[str, str]]) -> list[int]: ...

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> "RequestStream": ...


@dataclass
class ReplyStream:
    context: list[dict[str, str]]  # the chat up to the user turn being answered
    params: SamplingParams  # n > 1: that many replies from one request, the prompt prefilled once
    stream: "RequestStream | None" = None  # set by `run` once the request is submitted
    is_stop_requested: bool = False

    def run(self, model: Replier, on_delta: Callable[[int, str], None], worker: Cancellable) -> "RequestOutput":
        """Submit the request and read it to its end, calling on_delta(reply index, text)
        for each piece of text; the worker's cancellation counts as a stop. Blocking: call
        from that worker's thread."""
        self.stream = model.submit(model.encode(self.context), self.params)
        if self.is_stop_requested:  # stop() came before the stream existed
            self.stream.cancel()
        for event in self.stream:
            if worker.is_cancelled and not self.is_stop_requested:
                self.stop()
            if event.text_delta:
                on_delta(event.index, event.text_delta)
        return self.stream.result()

    def stop(self) -> None:
        """Cancel the request; its replies end as 'abort' with the text so far."""
        self.is_stop_requested = True
        if self.stream is not None:
            self.stream.cancel()

    def sampling_record(self) -> dict[str, Any]:
        """How the replies were sampled, as stored with each (max tokens as sent: cut to
        what the model's context had room for)."""
        p = self.params
        return {"temperature": p.temperature, "top_p": p.top_p, "max_new_tokens": p.max_new_tokens,
                "repetition_penalty": p.repetition_penalty, "n": p.n}

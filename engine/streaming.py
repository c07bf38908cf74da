"""A thread-safe streaming front over LLMEngine.

A background thread owns the engine and runs `step()` while there is work. Any thread may
`submit` a request and iterate over its `RequestStream` as tokens arrive, or `cancel` it.
Calls from other threads reach the engine only through a command queue drained by the
loop thread between steps, so the engine itself never needs a lock.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Callable

from engine.engine import LLMEngine
from engine.sampling import SamplingParams
from engine.sequence import RequestOutput, TokenEvent

_DONE = object()


class RequestStream:
    """Events of one request, in order, as an iterator; ends when every sample has finished."""

    def __init__(self, front: "StreamingEngine", request_id: str, num_samples: int) -> None:
        self._front = front
        self.request_id = request_id
        self._events: queue.Queue = queue.Queue()
        self._remaining = num_samples
        self._output: RequestOutput | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()

    def __iter__(self) -> Iterator[TokenEvent]:
        while True:
            item = self._events.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def cancel(self) -> None:
        """Abort the request; its samples finish with 'abort', the text so far kept."""
        self._front._call(lambda engine: engine.abort(self.request_id))

    def result(self, timeout: float | None = None) -> RequestOutput:
        """The finished output (blocks until the request ends)."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"request {self.request_id} did not finish in {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._output is not None
        return self._output

    @property
    def is_finished(self) -> bool:
        return self._finished.is_set()

    # Called by the loop thread.
    def _deliver(self, event: TokenEvent) -> bool:
        self._events.put(event)
        if event.finished:
            self._remaining -= 1
        return self._remaining == 0

    def _finish(self, output: RequestOutput | None, error: BaseException | None = None) -> None:
        self._output, self._error = output, error
        self._finished.set()
        self._events.put(_DONE)


class StreamingEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._commands: queue.Queue[Callable[[LLMEngine], None]] = queue.Queue()
        self._streams: dict[str, RequestStream] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> "StreamingEngine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Abort everything in flight and end the loop thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, prompt_token_ids: list[int], params: SamplingParams) -> RequestStream:
        """Queue a request; bad input raises InvalidRequestError here, in the caller's thread."""
        ready = threading.Event()
        holder: dict[str, object] = {}

        def add(engine: LLMEngine) -> None:
            try:
                request_id = engine.add_request(prompt_token_ids, params)
                stream = RequestStream(self, request_id, params.n)
                self._streams[request_id] = stream
                holder["stream"] = stream
            except BaseException as exc:  # handed back to the submitting thread
                holder["error"] = exc
            ready.set()

        if self._thread is None:
            raise RuntimeError("StreamingEngine.start() was not called")
        self._call(add)
        ready.wait()
        if "error" in holder:
            raise holder["error"]  # type: ignore[misc]
        return holder["stream"]  # type: ignore[return-value]

    def _call(self, command: Callable[[LLMEngine], None]) -> None:
        self._commands.put(command)
        self._wake.set()

    def _loop(self) -> None:
        engine = self.engine
        engine.warm_up()  # requests submitted meanwhile wait in the queue, in order
        while not self._stopping:
            while True:
                try:
                    self._commands.get_nowait()(engine)
                except queue.Empty:
                    break
            if not engine.has_unfinished():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                events = engine.step()
            except BaseException as exc:  # a failed step ends every stream with the error
                self._fail_all(exc)
                continue
            for event in events:
                stream = self._streams.get(event.request_id)
                if stream is not None and stream._deliver(event):
                    del self._streams[event.request_id]
                    stream._finish(engine.pop_output(event.request_id))
        self._abort_all()

    def _fail_all(self, exc: BaseException) -> None:
        for request_id, stream in list(self._streams.items()):
            self.engine.abort(request_id)
            stream._finish(None, exc)
        self._streams.clear()
        self.engine.step()  # drain the abort events and free the cache

    def _abort_all(self) -> None:
        for request_id, stream in list(self._streams.items()):
            self.engine.abort(request_id)
            stream._finish(self.engine.pop_output(request_id))
        self._streams.clear()

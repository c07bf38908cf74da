"""ReplyStream, the chat's and compare mode's request, on the real engine with the tiny chat
model: the text deltas add up to each reply, the record says how they were sampled, and a
stop (even one before the request exists) or the worker's cancellation ends the request."""

from __future__ import annotations

import pytest

from chat_tui.services.model_service import ModelService, load_serving_model
from chat_tui.services.reply_stream import ReplyStream
from engine.sampling import SamplingParams

CONTEXT = [{"role": "user", "content": "Hello there"}]


class FakeWorker:
    """Stands in for the Textual worker a screen runs the request in: only its flag."""

    is_cancelled = False


@pytest.fixture(scope="module")
def model(tiny_chat_model):
    service = ModelService()
    service.install(load_serving_model(tiny_chat_model, None, "tiny"))
    yield service
    service.close()


def endless(n: int = 1) -> SamplingParams:
    """A request that would write 600 tokens unless stopped."""
    return SamplingParams(max_new_tokens=600, ignore_eos=True, seed=5, n=n)


def test_deltas_add_up_to_each_reply_and_the_record_says_how_they_were_sampled(model):
    params = SamplingParams(temperature=0.9, top_p=0.8, repetition_penalty=1.2, max_new_tokens=5000, seed=3, n=2)
    request = ReplyStream(CONTEXT, params)
    texts = ["", ""]

    def on_delta(index: int, text: str) -> None:
        texts[index] += text

    output = request.run(model, on_delta, FakeWorker())
    assert [c.text for c in sorted(output.completions, key=lambda c: c.index)] == texts
    room = model.require().max_context - len(model.encode(CONTEXT))
    assert request.sampling_record() == {"temperature": 0.9, "top_p": 0.8, "max_new_tokens": room,
                                         "repetition_penalty": 1.2, "n": 2}


def test_a_stop_before_the_request_exists_still_ends_it(model):
    request = ReplyStream(CONTEXT, endless(n=2))
    request.stop()
    output = request.run(model, lambda index, text: None, FakeWorker())
    assert [c.finish_reason for c in output.completions] == ["abort", "abort"]
    assert all(len(c.token_ids) < 600 for c in output.completions)


def test_the_workers_cancellation_ends_the_request_with_what_was_written(model):
    worker = FakeWorker()
    written = []

    def on_delta(index: int, text: str) -> None:
        written.append(text)
        worker.is_cancelled = True

    output = ReplyStream(CONTEXT, endless()).run(model, on_delta, worker)
    [completion] = output.completions
    assert completion.finish_reason == "abort" and 0 < len(completion.token_ids) < 600
    assert completion.text.startswith("".join(written))

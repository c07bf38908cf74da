"""ModelService's loads on the real engine with the tiny chat model: loads run off the
calling thread, one at a time, and report back; a later load supersedes earlier ones (a
model they loaded is stopped, never installed; one not begun is skipped); a failed load
leaves the service without a model."""

from __future__ import annotations

import queue

import pytest
from app_support import open_chat_store

from chat_tui.services.model_service import ModelService
from engine.errors import ModelLoadError
from engine.sampling import SamplingParams


@pytest.fixture
def store(tiny_chat_model):
    store = open_chat_store(tiny_chat_model)
    yield store
    store.close()


def start(service: ModelService, store, outcomes: queue.Queue, requested: str | None = None, events=None,
          on_progress=None) -> int:
    """Start a load whose outcome goes to `outcomes`, and with its progress to `events`."""
    events = [] if events is None else events

    def progress(number: int, *_) -> None:
        events.append(("progress", number))
        if on_progress is not None:
            on_progress()

    def finished(*outcome) -> None:
        events.append(("finished", outcome[0]))
        outcomes.put(outcome)

    return service.load_in_background(store, requested, None, "cpu", "none", on_progress=progress, on_finished=finished)


def test_later_loads_supersede_earlier_ones_which_never_get_installed(store):
    service, outcomes, events, later = ModelService(), queue.Queue(), [], []

    def two_more_switches() -> None:  # arriving while the first load is under way
        if not later:
            later.extend(start(service, store, outcomes, events=events) for _ in range(2))

    first = start(service, store, outcomes, events=events, on_progress=two_more_switches)
    finished = {number: (serving, error) for number, serving, error in (outcomes.get(timeout=120) for _ in range(3))}
    second, third = later
    assert (first, second, third) == (1, 2, 3) and service.is_loading and not service.is_ready
    # One load at a time: the third begins only once the first has ended.
    assert events.index(("finished", first)) < events.index(("progress", third))
    assert finished[second] == (None, None)  # superseded before it began: never loaded
    stale, latest = finished[first][0], finished[third][0]
    assert stale is not None and latest is not None  # loads one after the other never break each other

    assert not service.finish_load(first, stale) and not service.finish_load(second, None)
    assert not service.is_ready and service.is_loading
    with pytest.raises(RuntimeError):  # the superseded model's engine loop was stopped
        stale.front.submit([1, 2, 3], SamplingParams(max_new_tokens=1))
    assert service.finish_load(third, latest)
    assert service.require() is latest and not service.is_loading
    assert latest.version_id == store.active_model_version().id
    service.close()


def test_a_failed_load_ends_loading_with_no_model(store, tmp_path):
    service, outcomes = ModelService(), queue.Queue()
    number = start(service, store, outcomes, requested=str(tmp_path / "no-such-model"))
    finished, serving, error = outcomes.get(timeout=60)
    assert (finished, serving) == (number, None) and isinstance(error, ModelLoadError)
    assert service.finish_load(number, None)
    assert not service.is_loading and not service.is_ready

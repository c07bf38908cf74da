"""Helpers for the app's tests: an app wired to a real store, stored conversations and
settings, and waiting on a condition (never a fixed sleep).

The model the app tests chat with is tiny_models' `make_tiny_chat_model_dir`: random
weights, so its replies are gibberish, but real: they come token by token from the real
engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Callable

from chat_tui import paths


def open_store():
    from feedback import Store

    paths.ensure_data_dir()
    return Store(paths.database_path())


def register_tiny_model(store, model_dir: Path, name: str = "tiny-v1", activate: bool = True) -> int:
    return store.register_model_version(name, str(model_dir), source="import", activate=activate).id


def open_chat_store(model_dir: Path, **settings):
    """The store with `model_dir` as the active version 'tiny-v1' and the test settings
    saved (`settings` override them)."""
    store = open_store()
    register_tiny_model(store, model_dir)
    save_test_settings(store, **settings)
    return store


def save_test_settings(store, **overrides) -> None:
    """Short, reproducible replies so the tests stay fast on two cores."""
    from chat_tui.services.chat_settings import ChatSettings
    from chat_tui.services.settings_store import SettingsStore

    values = {"max_new_tokens": 12, "seed": 1234, "temperature": 1.0, "top_p": 1.0, "repetition_penalty": 1.0}
    values.update(overrides)
    SettingsStore(store).save(ChatSettings(**values))


async def wait_for(
    pilot, condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition", poll_s: float = 0.01
) -> None:
    """Let the app run until `condition()` holds; fail the test after `timeout` seconds.

    Looks every `poll_s` seconds, yielding to the app (it runs on this same loop) in
    between: `pilot.pause` would wait for the screen to go idle, which never happens
    while a reply streams.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(poll_s)


def make_app(store, *, load_model: bool = True, requested_model: str | None = None):
    """The real ChatApp on a real store; it also keeps every notification it showed."""
    from chat_tui.app import ChatApp
    from chat_tui.services.app_services import AppServices

    class RecordingChatApp(ChatApp):
        def __init__(self, services):
            super().__init__(services)
            self.notices: list[tuple[str, str]] = []

        def notify(self, message, *, title="", severity="information", timeout=None, markup=True):
            self.notices.append((str(message), severity))
            return super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    services = AppServices(store, requested_model=requested_model, should_load_model=load_model)
    return RecordingChatApp(services)


@contextlib.asynccontextmanager
async def running_app(
    store, size: tuple[int, int], *, load_model: bool = True, requested_model: str | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """make_app's app running under a pilot, as (app, pilot); when it loads a model, from
    the moment that model is ready."""
    app = make_app(store, load_model=load_model, requested_model=requested_model)
    async with app.run_test(size=size) as pilot:
        if load_model:
            await wait_for(pilot, lambda: app.services.model.is_ready, timeout=120, what="model loaded")
        yield app, pilot


async def focus_latest_reply(pilot):
    """Move from the prompt to the latest reply (the up key) and return its MessageView."""
    from chat_tui.widgets.message_view import MessageView

    app = pilot.app
    app.screen.query_one("#prompt").focus()
    await pilot.press("up")
    await wait_for(pilot, lambda: isinstance(app.focused, MessageView), what="reply focused")
    return app.focused


def noticed(app, text: str) -> bool:
    """Whether the app showed a notification containing `text`."""
    return any(text in message for message, _ in app.notices)


def seed_conversation(store, user: str, replies: list[str], version_id: int | None = None):
    """A stored conversation: one user turn and its replies (the last one shown)."""
    conversation = store.create_conversation()
    message = store.add_user_message(conversation.id, user)
    stored = [store.add_assistant_reply(message.id, reply, model_version_id=version_id) for reply in replies]
    return conversation, message, stored


def trainer_transcript() -> str:
    """What `chat-tui train --progress-json` prints for a short PPO run (the figures of a
    real one), written by the trainer's own JsonProgress, so the app reads the real format."""
    import io

    from trainer.progress import JsonProgress

    out = io.StringIO()
    progress = JsonProgress(out)
    progress.message("base model: tiny-v1")
    progress.message("phases: sft -> reward -> ppo")
    progress.phase("reward", 12).advance(12, {"loss": 0.683, "accuracy": 1.0})
    ppo = progress.phase("ppo", 4)
    for reward, kl in [(-0.01693, 0.0), (-0.1845, 0.0002773), (0.05065, 0.0008095), (0.1929, 0.001892)]:
        ppo.advance(1, {"reward": reward, "kl": kl, "entropy": 5.602})
    progress.emit({"event": "done", "run_id": 1, "version_id": 2, "version": "tiny-v1-ppo-run1"})
    return out.getvalue()


def async_test(fn):
    """Run an async test function with asyncio.run (no pytest async plugin needed)."""
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def press_soon(pilot, *keys: str) -> "asyncio.Task":
    """Press keys in a task and return at once, so the test can watch what happens meanwhile
    (`pilot.press` returns only once the screen is idle, i.e. after a whole reply)."""
    return asyncio.get_running_loop().create_task(pilot.press(*keys))


def screen_text(app) -> str:
    """What the terminal shows now, as plain text lines (what a person reads)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def widget_text(app, widget) -> str:
    """What the terminal shows inside `widget`'s region, as plain text lines."""
    region = widget.region
    strips = app.screen._compositor.render_strips()[region.y : region.bottom]
    return "\n".join(strip.crop(region.x, region.right).text for strip in strips)


def press_together(app, *keys: str) -> None:
    """Send key events back to back, as a terminal delivers keys typed faster than the app
    handles them (`pilot.press` waits for the app to go idle after each key)."""
    from textual import events

    for key in keys:
        event = events.Key(key, None)
        event.set_sender(app)
        app._driver.send_message(event)


async def send(app, pilot, text: str) -> None:
    """Type and send a message, then wait until its reply is written and stored."""
    chat = app.screen
    before = len(chat.session.turns())
    chat.query_one("#prompt").focus()
    await pilot.press(*text, "enter")
    await wait_for(pilot, lambda: chat.job is None and len(chat.session.turns()) == before + 2, what="reply stored")


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`chat-tui ARGS` as the console script runs it: (exit status, stdout, stderr)."""
    import sys

    from chat_tui.cli import main

    monkeypatch.setattr(sys, "argv", ["chat-tui", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err

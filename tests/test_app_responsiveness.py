"""The UI stays responsive while a reply streams: keypresses typed into the prompt during
generation by the real default model are handled within 100 ms.

A key goes in the way a terminal's does (through the app's driver) and the time is taken
until the prompt's text holds it. The reply is generated meanwhile by the real engine
loop in its own thread, and streamed into the chat log as Markdown.
"""

from __future__ import annotations

import asyncio
import statistics
from time import perf_counter

import pytest
from app_support import async_test, make_app, open_store, press_soon, wait_for
from textual import events

from chat_tui.services.chat_settings import ChatSettings
from chat_tui.services.settings_store import SettingsStore

LIMIT_S = 0.100


async def key_latency(app, prompt, character: str) -> float:
    """Seconds from a key entering the app to the prompt showing its character."""
    before = prompt.text
    started = perf_counter()
    app._driver.send_message(events.Key(character, character))  # the path a terminal key takes
    while prompt.text == before:
        await asyncio.sleep(0.0005)
    return perf_counter() - started


@pytest.mark.default_model
@async_test
async def test_keypresses_are_handled_within_100ms_while_a_reply_streams():
    store = open_store()
    SettingsStore(store).save(ChatSettings(max_new_tokens=200))
    app = make_app(store)  # a fresh install: imports and activates the default model
    async with app.run_test(size=(120, 36)) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: app.services.model.is_ready, timeout=600, what="default model loaded")
        await pilot.press(*"Tell me a long story about a lighthouse keeper.")
        sending = press_soon(pilot, "enter")
        await wait_for(pilot, lambda: chat.job is not None and chat.job.num_events >= 3, timeout=120,
                       what="the reply streaming")
        prompt = chat.query_one("#prompt")
        latencies = []
        tokens_before = chat.job.num_events
        for character in "responsive":
            if chat.job is None:
                break
            latencies.append(await key_latency(app, prompt, character))
            await asyncio.sleep(0.05)  # a fast typist: about 15 keys a second
        streamed = chat.job.num_events - tokens_before if chat.job else None
        chat.action_stop()
        await sending
        await wait_for(pilot, lambda: chat.job is None, timeout=60, what="the reply stopped")
    store.close()
    assert len(latencies) == len("responsive"), "the reply ended before the keys were typed"
    assert streamed and streamed > 0, "no tokens arrived while the keys were typed"
    print(f"\nkeypress latency while streaming: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} keys")
    assert max(latencies) < LIMIT_S, [f"{t * 1000:.1f} ms" for t in latencies]

"""The UI stays responsive while a reply streams: keypresses typed into the prompt during
generation by the real default model are handled within 100 ms.

A key goes in the way a terminal's does (`pilot.press` hands it to the app's driver) and
the time is taken until the prompt's text holds it. One key is typed per streamed token,
so every key lands while the real engine loop, in its own thread, is generating and the
reply is streamed into the chat log as Markdown.
"""

from __future__ import annotations

import asyncio
import statistics
from time import perf_counter

import pytest
from app_support import async_test, make_app, open_store, press_soon, wait_for

from chat_tui.services.chat_settings import ChatSettings
from chat_tui.services.settings_store import SettingsStore

LIMIT_S = 0.100


async def key_latency(pilot, prompt, character: str) -> tuple[float, asyncio.Task]:
    """Seconds from a key entering the app to the prompt showing its character, and the
    press (which goes on waiting for the app to go idle: await it later)."""
    before = prompt.text
    started = perf_counter()
    pressing = press_soon(pilot, character)
    await wait_for(pilot, lambda: prompt.text != before, timeout=10, poll_s=0.0005, what=f"{character!r} shown")
    return perf_counter() - started, pressing


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
        latencies, presses = [], []
        for character in "responsive":
            job = chat.job
            if job is None:
                break
            seen = job.num_events
            await wait_for(pilot, lambda: chat.job is not job or job.num_events > seen, timeout=30, what="a token")
            if chat.job is not job:
                break
            latency, pressing = await key_latency(pilot, prompt, character)
            latencies.append(latency)
            presses.append(pressing)
        chat.action_stop()
        await asyncio.gather(sending, *presses)
        await wait_for(pilot, lambda: chat.job is None, timeout=60, what="the reply stopped")
        typed = prompt.text
    store.close()
    assert len(latencies) == len("responsive"), "the reply ended before the keys were typed"
    assert typed == "responsive"  # every key, in order
    print(f"\nkeypress latency while streaming: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} keys")
    assert max(latencies) < LIMIT_S, [f"{t * 1000:.1f} ms" for t in latencies]

"""The installed `chat-tui`, in a real terminal (tmux), with the real default model, on a
fresh install: type a question, watch the reply stream, thumbs-up, quit; then the
database holds the conversation and the rating.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid

import pytest

from chat_tui import paths

pytestmark = [
    pytest.mark.default_model,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.skipif(shutil.which("chat-tui") is None, reason="chat-tui is not installed"),
]
QUESTION = "What is the capital of France?"


class Tmux:
    """One tmux server (own socket) running one program in a 120x40 window."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.socket = f"chat-tui-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        # -u COLUMNS/LINES: sizes inherited from pytest's environment would override the pane's.
        self._tmux("new-session", "-d", "-s", "app", "-x", "120", "-y", "40",
                   f"env -u COLUMNS -u LINES {exports} {command}")
        self._tmux("set-option", "-t", "app", "remain-on-exit", "on")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "app")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._tmux("send-keys", "-t", "app", *(["-l"] if literal else []), *keys)

    def is_dead(self) -> bool:
        return self._tmux("display-message", "-p", "-t", "app", "#{pane_dead}").strip() == "1"

    def wait_for(self, condition, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; the screen:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def test_chat_in_tmux_streams_a_reply_takes_a_thumbs_up_and_stores_both(chat_tui_home):
    from feedback import Store

    from chat_tui.services.chat_settings import ChatSettings
    from chat_tui.services.settings_store import SettingsStore

    # A short reply keeps the test quick on a laptop CPU; the model is imported as on a fresh install.
    paths.ensure_data_dir()
    with Store(paths.database_path()) as store:
        SettingsStore(store).save(ChatSettings(max_new_tokens=40))
    tmux = Tmux("chat-tui", {"CHAT_TUI_HOME": str(chat_tui_home), "TERM": "xterm-256color",
                             "PATH": os.environ["PATH"]})
    try:
        tmux.wait_for(lambda s: "Write a message" in s, 60, "the window")
        tmux.wait_for(lambda s: "● SmolLM2-135M-Instruct" in s, 600, "the default model imported and loaded")
        # The question and Enter in one go, so they can arrive in one terminal read: Enter
        # must still send the whole question (it once ran before the text was inserted).
        tmux.keys(QUESTION, literal=True)
        tmux.keys("Enter")
        streaming = tmux.wait_for(lambda s: "writing… (Esc stops)" in s, 120, "the reply to start streaming")
        assert QUESTION in streaming
        # The reply's header names its model ("Assistant · [cut at max tokens · ]MODEL": a
        # sampled reply may or may not reach the 40-token limit).
        tmux.wait_for(lambda s: "tok/s" in s and "writing…" not in s
                      and re.search(r"Assistant · (cut at max tokens · )?SmolLM2-135M-Instruct", s) is not None,
                      60, "the reply to finish, under its model's name")
        tmux.keys("Up")
        tmux.wait_for(lambda s: "Good" in s and "Teach" in s, 20, "the reply keys in the footer")
        tmux.keys("+")
        tmux.wait_for(lambda s: "👍" in s, 20, "the thumbs-up shown")
        tmux.keys("C-q")
        deadline = time.monotonic() + 30
        while not tmux.is_dead():
            assert time.monotonic() < deadline, "chat-tui did not quit on ctrl+q"
            time.sleep(0.1)
    finally:
        tmux.close()

    with Store(paths.database_path()) as store:
        [conversation] = store.list_conversations()
        tree = store.load_conversation(conversation.id)
        user, reply = tree.shown_path
        assert (user.role, user.content) == ("user", QUESTION)
        assert reply.role == "assistant" and reply.content.strip()
        assert reply.model_version_id == store.active_model_version().id
        assert store.active_model_version().name == "SmolLM2-135M-Instruct"
        assert tree.ratings[reply.id].value == 1

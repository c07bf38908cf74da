"""Shared pytest fixtures. Every test gets its own data directory.

Tests run tiny models, whose matmuls are too small to gain from threads; with several
threads per process and other processes busy, OpenMP's spinning makes them far slower.
So in-process torch work uses one thread. Subprocesses (the CLI, accelerate) keep the
default.
"""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def chat_tui_home(tmp_path_factory, monkeypatch):
    """Point CHAT_TUI_HOME at a fresh temporary folder for each test."""
    home = tmp_path_factory.mktemp("chat_tui_home")
    monkeypatch.setenv("CHAT_TUI_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def outside_tmux(monkeypatch):
    """Tests never reach the tmux a developer runs them in (copying talks to tmux when
    $TMUX is set); a test that wants tmux starts its own."""
    monkeypatch.delenv("TMUX", raising=False)


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    """The app tests' chat model directory (tiny_models.make_tiny_chat_model_dir), built once."""
    from tiny_models import make_tiny_chat_model_dir

    return make_tiny_chat_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def bpe():
    """loading_helpers' byte-level BPE tokenizer (vocabulary 400, ChatML specials), trained once."""
    from loading_helpers import train_byte_level_bpe

    return train_byte_level_bpe(vocab_size=400)


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory):
    """loading_helpers' sentencepiece model file, trained once."""
    from loading_helpers import train_sentencepiece

    return train_sentencepiece(tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama, loaded (the C++ decode step's tests share it)."""
    from engine.loading import load_model
    from tiny_models import make_tiny_model_dir

    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    """A tiny random Qwen2: q/k/v biases, and a tied LM head."""
    from engine.loading import load_model
    from tiny_models import make_tiny_model_dir

    directory = make_tiny_model_dir(tmp_path_factory.mktemp("qwen") / "model", model_type="qwen2", tie_word_embeddings=True)
    return load_model(directory)

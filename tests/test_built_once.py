"""BuiltOnce builds on first use only, once even when threads race, and remembers failure."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from engine.kernels.built_once import NOT_TRIED, BuiltOnce, first_line


def test_threads_asking_at_once_share_one_build():
    calls = []

    def build(tag):
        calls.append(tag)
        time.sleep(0.05)  # long enough for the other threads to arrive while it runs
        return f"built for {tag}"

    once = BuiltOnce(build)
    assert once.result is NOT_TRIED
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(once.get(n))) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [f"built for {calls[0]}"] * 4


def test_a_failed_build_is_not_retried():
    calls = []
    once = BuiltOnce(lambda: calls.append(1))  # returns None: failed
    assert once.get() is None and once.get() is None
    assert calls == [1] and once.result is None


def test_first_line_prefers_a_failed_commands_stderr():
    with pytest.raises(subprocess.CalledProcessError) as failed:
        subprocess.run(["sh", "-c", "echo 'x.cpp:1: error: boom' >&2; echo more >&2; exit 1"],
                       capture_output=True, text=True, check=True)
    assert first_line(failed.value) == "x.cpp:1: error: boom"
    assert first_line(RuntimeError("\nfirst\nsecond")) == "first"
    assert first_line(RuntimeError()) == "RuntimeError"

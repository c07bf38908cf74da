"""BuiltOnce builds on first use only, once even when threads race, and remembers failure."""

from __future__ import annotations

import subprocess
import threading

import pytest

from engine.kernels.built_once import NOT_TRIED, BuiltOnce, first_line


class RacedBuiltOnce(BuiltOnce):
    """A BuiltOnce whose callers meet at a barrier right after their first, unlocked look
    at `result`: every one of them has seen it unbuilt before any may go on, so all are
    inside the window where only one must build, at once."""

    def __init__(self, build, num_callers: int) -> None:
        self.meeting = threading.Barrier(num_callers, timeout=30)
        self._has_looked = threading.local()
        super().__init__(build)

    @property
    def result(self):
        value = self._value
        if value is NOT_TRIED and not getattr(self._has_looked, "value", False):
            self._has_looked.value = True
            self.meeting.wait()
        return value

    @result.setter
    def result(self, value) -> None:
        self._value = value


def test_callers_inside_the_window_at_once_share_one_build():
    calls = []

    def build(tag):
        calls.append(tag)
        return f"built for {tag}"

    num_callers = 4
    once = RacedBuiltOnce(build, num_callers)
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(once.get(n))) for n in range(num_callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not once.meeting.broken, "the callers never all reached the window"
    assert len(calls) == 1
    assert results == [f"built for {calls[0]}"] * num_callers
    assert once.result == results[0]


def test_a_failed_build_is_not_retried():
    calls = []
    once = BuiltOnce(lambda: calls.append(1))  # returns None: failed
    assert once.result is NOT_TRIED
    assert once.get() is None and once.get() is None
    assert calls == [1] and once.result is None


def test_first_line_prefers_a_failed_commands_stderr():
    with pytest.raises(subprocess.CalledProcessError) as failed:
        subprocess.run(["sh", "-c", "echo 'x.cpp:1: error: boom' >&2; echo more >&2; exit 1"],
                       capture_output=True, text=True, check=True)
    assert first_line(failed.value) == "x.cpp:1: error: boom"
    assert first_line(RuntimeError("\nfirst\nsecond")) == "first"
    assert first_line(RuntimeError()) == "RuntimeError"

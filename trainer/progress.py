"""Console progress for training phases: one bar per phase, with ETA and live metrics.

`ConsoleProgress` prints to a stream (stderr by default); on a terminal the bar redraws in
place, elsewhere (logs, tests) a line is printed every few percent. Only the main process
of a multi-process run should print, so callers pass `enabled=accelerator.is_main_process`.
`JsonProgress` writes one JSON object per line instead, for a program reading the run
(the chat's training screen, `chat-tui train --progress-json`).

A resumed phase first advances by the steps an earlier process did, with no metrics:
the console's ETA counts only the steps done in this process, and the JSON step event of
that first advance says `"resumed": true` so a reader can do the same.
`SilentProgress` records nothing and prints nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import IO, Protocol


class PhaseProgress(Protocol):
    def advance(self, steps: int = 1, metrics: dict[str, float] | None = None) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def phase(self, name: str, total: int) -> PhaseProgress: ...

    def message(self, text: str) -> None: ...


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())


def is_resume(done_before: int, steps: int, metrics: dict[str, float] | None) -> bool:
    """Whether an advance is a resumed phase catching up: its first advance, by steps an
    earlier process did (phases report them with no metrics before their first step)."""
    return done_before == 0 and steps > 0 and not metrics


def eta_seconds(elapsed: float, steps_here: int, steps_left: int) -> float | None:
    """Time left at the pace of the steps done in this process (None before the first);
    steps done before a resume took no time here and must not count."""
    return elapsed / steps_here * steps_left if steps_here > 0 else None


class _ConsolePhase:
    WIDTH = 24

    def __init__(self, owner: "ConsoleProgress", name: str, total: int) -> None:
        self.owner = owner
        self.name = name
        self.total = max(1, total)
        self.done = 0
        self.resumed_at = 0  # steps an earlier process did before this one resumed the phase
        self.started = time.perf_counter()
        self.metrics: dict[str, float] = {}
        self.last_printed_fraction = -1.0
        self.closed = False

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        fraction = min(1.0, self.done / self.total)
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        eta = eta_seconds(elapsed, self.done - self.resumed_at, self.total - self.done)
        if eta is not None and self.done < self.total:
            timing = f"eta {format_duration(eta)}"
        else:
            timing = f"{format_duration(elapsed)}"
        text = f"{self.name:<8} [{bar}] {self.done}/{self.total} {timing}"
        if self.metrics:
            text += "  " + format_metrics(self.metrics)
        return text

    def advance(self, steps: int = 1, metrics: dict[str, float] | None = None) -> None:
        if is_resume(self.done, steps, metrics):
            self.resumed_at = steps
            self.started = time.perf_counter()  # the pace is that of the steps from here on
        self.done += steps
        if metrics:
            self.metrics = dict(metrics)
        fraction = self.done / self.total
        if self.owner.is_tty:
            self.owner.write("\r\x1b[2K" + self.line())
        elif fraction - self.last_printed_fraction >= 0.1 or self.done >= self.total:
            self.last_printed_fraction = fraction
            self.owner.write(self.line() + "\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.owner.is_tty:
            self.owner.write("\r\x1b[2K" + self.line() + "\n")
        elif self.last_printed_fraction < 1.0 and self.done < self.total:
            self.owner.write(self.line() + "\n")


class ConsoleProgress:
    def __init__(self, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def write(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text)
            self.stream.flush()

    def phase(self, name: str, total: int) -> PhaseProgress:
        return _ConsolePhase(self, name, total)

    def message(self, text: str) -> None:
        self.write(text + "\n")


class _JsonPhase:
    def __init__(self, owner: "JsonProgress", name: str, total: int) -> None:
        self.owner = owner
        self.name = name
        self.total = max(1, total)
        self.done = 0
        owner.emit({"event": "phase", "phase": name, "total": self.total})

    def advance(self, steps: int = 1, metrics: dict[str, float] | None = None) -> None:
        if steps == 0 and not metrics:
            return  # nothing happened (a phase starting from step 0)
        resumed = is_resume(self.done, steps, metrics)
        self.done += steps
        # JSON has no NaN or infinity; a metric that is not finite is left out of the line.
        clean = {k: float(v) for k, v in (metrics or {}).items() if math.isfinite(float(v))}
        event = {"event": "step", "phase": self.name, "step": self.done, "total": self.total, "metrics": clean}
        if resumed:
            event["resumed"] = True  # done by an earlier process: no time was spent on them here
        self.owner.emit(event)

    def close(self) -> None:
        pass  # the next "phase" or "done" event tells a reader this phase is over


class JsonProgress:
    """Progress as JSON lines: {"event": "phase" | "step" | "message" | "done", ...}."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled

    def emit(self, event: dict) -> None:
        if self.enabled:
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()

    def phase(self, name: str, total: int) -> PhaseProgress:
        return _JsonPhase(self, name, total)

    def message(self, text: str) -> None:
        self.emit({"event": "message", "text": text})


class _SilentPhase:
    def advance(self, steps: int = 1, metrics: dict[str, float] | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class SilentProgress:
    def phase(self, name: str, total: int) -> PhaseProgress:
        return _SilentPhase()

    def message(self, text: str) -> None:
        pass

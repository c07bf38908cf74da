"""Console progress for training phases: one bar per phase, with ETA and live metrics.

`ConsoleProgress` prints to a stream (stderr by default); on a terminal the bar redraws in
place, elsewhere (logs, tests) a line is printed every few percent. Only the main process
of a multi-process run should print, so callers pass `enabled=accelerator.is_main_process`.
`JsonProgress` writes one JSON object per line instead, for a program reading the run
(the chat's training screen, `chat-tui train --progress-json`).
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


class _ConsolePhase:
    WIDTH = 24

    def __init__(self, owner: "ConsoleProgress", name: str, total: int) -> None:
        self.owner = owner
        self.name = name
        self.total = max(1, total)
        self.done = 0
        self.started = time.perf_counter()
        self.metrics: dict[str, float] = {}
        self.last_printed_fraction = -1.0
        self.closed = False

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        fraction = min(1.0, self.done / self.total)
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        if self.done and self.done < self.total:
            timing = f"eta {format_duration(elapsed / self.done * (self.total - self.done))}"
        else:
            timing = f"{format_duration(elapsed)}"
        text = f"{self.name:<8} [{bar}] {self.done}/{self.total} {timing}"
        if self.metrics:
            text += "  " + format_metrics(self.metrics)
        return text

    def advance(self, steps: int = 1, metrics: dict[str, float] | None = None) -> None:
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
        self.done += steps
        # JSON has no NaN or infinity; a metric that is not finite is left out of the line.
        clean = {k: float(v) for k, v in (metrics or {}).items() if math.isfinite(float(v))}
        self.owner.emit({"event": "step", "phase": self.name, "step": self.done, "total": self.total, "metrics": clean})

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

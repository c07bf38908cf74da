"""`chat-tui train` as a background process, and its progress read from its output.

The trainer runs in its own process so the chat stays responsive (and a crash there
cannot take the chat down); the training screen starts it with `--progress-json`. A
reader thread parses each output line into a `TrainingProgress` the screen polls. The
JSON lines (trainer/progress.py's JsonProgress) are one object each:
  {"event": "phase", "phase": "ppo", "total": 40}
  {"event": "step", "phase": "ppo", "step": 3, "total": 40, "metrics": {"reward": 0.1, "kl": 0.004}}
  {"event": "step", "phase": "ppo", "step": 12, "total": 40, "metrics": {}, "resumed": true}
  {"event": "message", "text": "..."}
  {"event": "done", "run_id": 3, "version_id": 7, "version": "smollm2-ppo-1"}
Any other line (a warning, a traceback) is kept as a log line. What the run produced is
read back from the store (the trainer records the run and its new model version there).
The ETA is timed here, as the lines arrive, from the steps this process did: a resumed
phase's earlier steps (the "resumed" event) took no time in it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from trainer.progress import eta_seconds

MAX_LOG_LINES = 300
MAX_POINTS = 400
REWARD_KEYS = ("reward", "rm_score", "score", "reward_mean")
KL_KEYS = ("kl", "kl_mean", "approx_kl")


@dataclass
class TrainingProgress:
    phase: str = ""
    step: int = 0
    total: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)  # one point per step that reported a reward
    kls: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    result_version_id: int | None = None
    result_version: str | None = None
    phase_started_at: float | None = None  # when this process began (or resumed) the phase
    start_step: int = 0  # the step it began at: those before were done by an earlier process
    last_step_at: float | None = None

    @property
    def eta_s(self) -> float | None:
        """Seconds left in the phase at the pace of the steps done in this process."""
        if self.phase_started_at is None or self.last_step_at is None or not self.total:
            return None
        return eta_seconds(self.last_step_at - self.phase_started_at, self.step - self.start_step,
                           self.total - self.step)

    @property
    def reward(self) -> float | None:
        return _first(self.metrics, REWARD_KEYS)

    @property
    def kl(self) -> float | None:
        return _first(self.metrics, KL_KEYS)


def _first(metrics: dict[str, float], keys: Sequence[str]) -> float | None:
    for key in keys:
        if key in metrics:
            return metrics[key]
    return None


def apply_line(progress: TrainingProgress, line: str, now: float | None = None) -> None:
    """Update `progress` from one line of the trainer's output, read at time `now`
    (time.monotonic() by default)."""
    now = time.monotonic() if now is None else now
    # A line redrawn in place (a library's progress bar on stderr) counts as its last state.
    line = line.rstrip("\r\n").split("\r")[-1].replace("\x1b[2K", "")
    if not line.strip():
        return
    event = _parse_json(line)
    if event is not None:
        _apply_event(progress, event, now)
    else:
        _append_log(progress, line)


def _parse_json(line: str) -> dict | None:
    if not line.lstrip().startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _apply_event(progress: TrainingProgress, event: dict, now: float) -> None:
    kind = event.get("event")
    if kind == "phase":
        progress.phase = str(event.get("phase", ""))
        progress.step, progress.total = 0, int(event.get("total") or 0)
        progress.metrics = {}
        progress.phase_started_at, progress.start_step, progress.last_step_at = now, 0, None
        _append_log(progress, f"phase {progress.phase} ({progress.total} steps)")
    elif kind == "step":
        metrics = {k: float(v) for k, v in (event.get("metrics") or {}).items() if isinstance(v, (int, float))}
        _apply_step(
            progress, str(event.get("phase", progress.phase)), int(event.get("step", progress.step + 1)),
            int(event.get("total") or progress.total), metrics,
        )
        if event.get("resumed"):
            # Steps an earlier process did: the pace counts from here.
            progress.phase_started_at, progress.start_step = now, progress.step
            _append_log(progress, f"{progress.phase}: resumed at step {progress.step} of {progress.total}")
        else:
            progress.last_step_at = now
    elif kind == "message":
        _append_log(progress, str(event.get("text", "")))
    elif kind == "done":
        progress.result_version_id = event.get("version_id")
        progress.result_version = event.get("version")
        _append_log(progress, f"done: {progress.result_version or 'no new version'}")


def _apply_step(progress: TrainingProgress, phase: str, step: int, total: int, metrics: dict[str, float]) -> None:
    if phase != progress.phase:
        progress.phase, progress.metrics = phase, {}
        progress.phase_started_at, progress.start_step, progress.last_step_at = None, 0, None
    progress.step, progress.total = step, total
    progress.metrics.update(metrics)
    reward, kl = _first(metrics, REWARD_KEYS), _first(metrics, KL_KEYS)
    if reward is not None:
        progress.rewards = (progress.rewards + [reward])[-MAX_POINTS:]
    if kl is not None:
        progress.kls = (progress.kls + [kl])[-MAX_POINTS:]


def _append_log(progress: TrainingProgress, text: str) -> None:
    progress.log = (progress.log + [text])[-MAX_LOG_LINES:]


def train_command(args: Sequence[str]) -> list[str]:
    """`chat-tui train ARGS` run by this same Python, so it sees the same installation."""
    return [sys.executable, "-c", "from chat_tui.cli import main; main()", "train", *args]


class TrainingProcess:
    """One training subprocess (`train_command(...)`, or the same under a launcher such as
    `accelerate launch`) and what its output has said so far."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.progress = TrainingProgress()
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="training-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                apply_line(self.progress, line)

    def snapshot(self) -> TrainingProgress:
        """A copy of the progress so far, safe to render while the reader keeps going."""
        with self._lock:
            p = self.progress
            return replace(p, metrics=dict(p.metrics), rewards=list(p.rewards), kls=list(p.kls), log=list(p.log))

    @property
    def returncode(self) -> int | None:
        """None while running; once it has exited, also waits for the last output lines."""
        code = self.process.poll()
        if code is not None:
            self._reader.join(timeout=2)
        return code

    def cancel(self) -> None:
        """Ask the trainer to stop (SIGTERM, so it can record the run as cancelled); kill it
        if it has not exited 10 s later. Returns at once."""
        if self.process.poll() is not None:
            return
        self.process.terminate()

        def kill_if_stuck() -> None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

        threading.Thread(target=kill_if_stuck, name="training-cancel", daemon=True).start()

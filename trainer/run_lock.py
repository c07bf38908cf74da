"""One training run at a time per data directory: an exclusive lock for the run's life.

The lock is `flock` on `<data dir>/training/.lock`, held by the main process from before
it picks a run to resume or start until it exits. The kernel releases it when the
process dies, however it dies (SIGKILL included), so a stale lock never blocks the next
run. The file also says who holds it (pid, and the run once it has one) for the message
a second run gets.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO

from trainer.checkpoints import runs_root
from trainer.errors import TrainerError

LOCK_FILE = ".lock"


class RunInProgressError(TrainerError):
    """Another `chat-tui train` holds the data directory's training lock."""


class RunLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = runs_root(data_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, or raise RunInProgressError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise RunInProgressError(f"another training run is in progress ({describe_holder(holder)}); "
                                     f"wait for it to finish or stop it first") from None
        self._file = handle
        self.note(run_id=None)
        return self

    def note(self, run_id: int | None) -> None:
        """Record who holds the lock (shown to a run that finds it taken)."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "run_id": run_id}))
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
    except ValueError:
        return "held by another process"
    run = f"run {holder['run_id']}, " if holder.get("run_id") is not None else ""
    return f"{run}pid {holder.get('pid')}"

"""Wall time and peak resident memory of each benchmark phase.

In-process phases: the kernel's high-water mark (VmHWM) is reset at the phase start by
writing 5 to /proc/self/clear_refs and read at its end, so each phase gets its own peak.
Where that is not possible (not Linux), the process's lifetime peak (ru_maxrss) is
reported and marked as such. Subprocess phases report the child's own ru_maxrss from
os.wait4, which covers that child alone.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class PhaseRecord:
    name: str
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_is_lifetime: bool = False  # True when the peak could not be reset for this phase
    in_subprocess: bool = False
    notes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _lifetime_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@contextmanager
def measured(name: str, records: list[PhaseRecord]) -> Iterator[PhaseRecord]:
    """Time a block of this process's work and record its own peak RSS."""
    record = PhaseRecord(name)
    was_reset = _reset_peak()
    started = time.perf_counter()
    try:
        yield record
    finally:
        record.wall_s = time.perf_counter() - started
        peak = _peak_mb() if was_reset else None
        record.peak_rss_mb = peak if peak is not None else _lifetime_peak_mb()
        record.peak_is_lifetime = peak is None
        records.append(record)


def run_measured(
    name: str, command: Sequence[str], records: list[PhaseRecord], log_path: Path, env: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Run `command`, teeing its output to `log_path`; record its wall time and peak RSS."""
    record = PhaseRecord(name, in_subprocess=True)
    started = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, text=True, bufsize=1,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()
            if echo is not None:
                echo(f"  [{name}] {line.rstrip()}")
        process.stdout.close()
        # wait4 gives this child's own rusage (Popen.wait would reap it without it).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    record.wall_s = time.perf_counter() - started
    record.peak_rss_mb = usage.ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else usage.ru_maxrss / 1024
    record.notes["returncode"] = process.returncode
    records.append(record)
    return process.returncode

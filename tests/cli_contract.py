"""The one-line-error contract, checked on the real `chat-tui` program.

`run_cli` runs `python -m chat_tui ARGS` in a subprocess whose address space is capped
(`resource.setrlimit(RLIMIT_AS, 3 GB)`), so a bad input that makes the program allocate
without bound fails the test instead of the machine. `assert_one_line_error` checks
what a user must see: a non-zero exit, exactly one stderr line, starting with "Error:",
naming the value or file, and no traceback. `tree_state` records a folder (names, sizes,
contents) and `database_state` a feedback database's rows, so a test can assert that a
failed command left them as they were.

`in_small_disk` wraps a command so that it runs in a private mount namespace where a
folder is a tiny tmpfs (a really full disk) or mounted read-only; it needs unprivileged
user namespaces and is skipped where they are missing.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ADDRESS_SPACE_LIMIT = 3 * 1024**3
REPO_ROOT = Path(__file__).resolve().parent.parent


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def cli_command(*args: str | bytes) -> list[str | bytes]:
    return [sys.executable, "-m", "chat_tui", *args]


def run_cli(*args: str | bytes, home: Path, stdin: bytes | None = None, timeout: float = 300,
            wrap: list[str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`chat-tui ARGS` with CHAT_TUI_HOME=home, under the address-space limit."""
    env = {**os.environ, "CHAT_TUI_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    command = (wrap or []) + cli_command(*args)
    return subprocess.run(command, input=stdin if stdin is not None else b"", capture_output=True, env=env,
                          timeout=timeout, preexec_fn=_limit_memory, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The contract; returns the error line."""
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode not in (0, None), (result.returncode, err)
    assert result.returncode > 0, f"killed by signal {-result.returncode}: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = err.splitlines()
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("Error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def tree_state(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with its size and a hash of its bytes (a
    database's -wal/-shm side files, which SQLite manages itself, are left out)."""
    if not root.exists():
        return {}
    state = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.endswith(("-wal", "-shm")):
            continue
        if path.is_dir():
            state[relative] = "dir"
        elif path.name.endswith(".db"):
            state[relative] = "database"  # compared by database_state
        else:
            state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def database_state(path: Path) -> list[str]:
    """The database's schema and rows as SQL text (empty when there is no database)."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def can_mount_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$(mktemp -d)"'],
                           capture_output=True)
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(not can_mount_namespaces(),
                                      reason="needs unprivileged user and mount namespaces (unshare -rm)")

FILLER = ".disk-filler"


def listing(root: Path) -> list[str]:
    """'relative path<TAB>size' of every file under `root` (folders with size 0), sorted;
    the same lines `in_namespace` writes to its report."""
    if not root.exists():
        return []
    lines = []
    for path in root.rglob("*"):
        if path.name == FILLER or path.name.endswith(("-wal", "-shm")):
            continue
        size = 0 if path.is_dir() else path.stat().st_size
        lines.append(f"{path.relative_to(root)}\t{size}")
    return sorted(lines)


def in_namespace(folder: Path, report: Path, *, free_kb: int | None = None, read_only: bool = False) -> list[str]:
    """A prefix for `run_cli(wrap=...)`: in a private mount namespace, `folder` becomes a
    tmpfs holding a copy of its files with `free_kb` KiB left (0: a full disk), and/or is
    mounted read-only; after the command, `listing(folder)` as the command left it is
    written to `report` (outside the namespace the folder is never changed)."""
    folder_q, report_q = shlex.quote(str(folder)), shlex.quote(str(report))
    steps = []
    if free_kb is not None:
        steps += [
            f"tar -C {folder_q} -cf \"$T\" .",
            f"size=$(( $(du -sk {folder_q} | cut -f1) + 64 + {free_kb} ))",
            f"mount -t tmpfs -o size=${{size}}k tmpfs {folder_q}",
            f"tar -C {folder_q} -xf \"$T\"",
            f"(cat /dev/zero > {folder_q}/{FILLER}) 2>/dev/null; true" if free_kb == 0 else
            f"head -c $(( ($(df -k --output=avail {folder_q} | tail -1) - {free_kb}) * 1024 )) /dev/zero "
            f"> {folder_q}/{FILLER}",
        ]
    if read_only:
        steps.append(f"mount --bind {folder_q} {folder_q} && mount -o remount,ro,bind {folder_q}")
    lister = (f"cd {folder_q} && find . -mindepth 1 ! -name {FILLER} ! -name '*-wal' ! -name '*-shm' "
              f"-printf '%P\\t%s %y\\n'")
    script = (f'T=$(mktemp) && {" && ".join(steps) or "true"} && rm -f "$T" && '
              f'{{ "$@"; rc=$?; }}; ({lister}) > {report_q}; exit $rc')
    return ["unshare", "-rm", "sh", "-c", script, "in-namespace"]


def read_report(report: Path) -> list[str]:
    """The report `in_namespace` wrote, in `listing`'s form."""
    lines = []
    for line in report.read_text().splitlines():
        name, rest = line.split("\t")
        size, kind = rest.split()
        lines.append(f"{name}\t{0 if kind == 'd' else size}")
    return sorted(lines)

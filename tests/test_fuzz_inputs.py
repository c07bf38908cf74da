"""Fuzz every user-controlled input under a memory limit (tests/fuzz_targets.py).

Each target runs in its own process whose address space is capped at 3 GB: a generated
input must give a one-line user error or be accepted, and must not make the code
allocate past the cap (that would be a MemoryError or a kill, failing the target).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_contract import ADDRESS_SPACE_LIMIT, REPO_ROOT

pytest.importorskip("hypothesis")

FUZZ_SCRIPT = Path(__file__).with_name("fuzz_targets.py")


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


@pytest.mark.parametrize("target", ["configs", "safetensors", "gguf", "feedback", "cli"])
def test_fuzzed_inputs_keep_the_one_line_contract_within_3_gb(target, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CHAT_TUI_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, str(FUZZ_SCRIPT), target, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=600, preexec_fn=_limit_memory)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]

"""Leftovers of killed imports and finished runs go; nothing still in use does.

A `models import` killed mid-write leaves its hidden staging folder; the next import (and
the app's start, and `chat-tui clean`) removes it, while the staging folder of an import
still running is kept. `chat-tui clean` also removes the checkpoint folders of training
runs the store records as finished, never those of a running run or of a folder no run
owns, and says how much it freed. Files chat-tui creates in its data directory are
private to the user.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_contract import REPO_ROOT, run_cli
from engine.loading import ModelStore
from engine.loading.model_store import STALE_STAGING_SECONDS, is_abandoned_staging, staging_prefix
from feedback import Store
from tiny_models import make_tiny_model_dir
from trainer.checkpoints import run_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny")


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def staging_folder(models: Path, name: str, pid: int, megabytes: int = 1) -> Path:
    folder = models / f".{name}.{pid}-abc123xy.partial"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.partial").write_bytes(b"\0" * (megabytes * 10**6))
    return folder


HOLD_IMPORT = """
import sys, time
import engine.loading.model_store as model_store
from pathlib import Path

def stuck(tensors, path, metadata=None):
    path.write_bytes(b"half a model")
    Path(sys.argv[3]).write_text("staging")  # tell the test where we are
    time.sleep(600)

model_store.write_tensors = stuck
model_store.ModelStore(sys.argv[1]).import_model(sys.argv[2], name="tiny")
"""


def test_a_killed_import_leaves_a_folder_that_the_next_import_removes(tmp_path, tiny):
    models = tmp_path / "models"
    signal_file = tmp_path / "in-staging"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", HOLD_IMPORT, str(models), str(tiny), str(signal_file)], env=env)
    deadline = time.monotonic() + 120
    while not signal_file.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the import never reached its write"
        time.sleep(0.05)
    [staging] = [p for p in models.iterdir() if p.name.endswith(".partial")]
    assert not is_abandoned_staging(staging)  # its process is alive: still being written
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert staging.exists() and is_abandoned_staging(staging)

    ModelStore(models).import_model(tiny, name="other")
    assert sorted(p.name for p in models.iterdir()) == ["other"]


def test_clean_removes_abandoned_leftovers_and_keeps_live_ones(tmp_path):
    home = tmp_path / "home"
    models = home / "models"
    abandoned = staging_folder(models, "gone", dead_pid(), megabytes=2)
    running = staging_folder(models, "running", os.getpid())
    old_style = models / ".legacy.k3j4h5g6.partial"  # from before folders named their process
    old_style.mkdir()
    (old_style / "config.json").write_text("{}")
    past = time.time() - STALE_STAGING_SECONDS - 60
    os.utime(old_style / "config.json", (past, past))
    os.utime(old_style, (past, past))
    recent_old_style = models / ".fresh.a1b2c3d4.partial"
    recent_old_style.mkdir()

    with Store(home / "feedback.db") as store:
        version = store.register_model_version("base", str(tmp_path / "base"))
        finished = store.start_training_run("dpo", {}, version.id)
        store.finish_training_run(finished.id, status="failed", error="boom")
        live = store.start_training_run("dpo", {}, version.id)
    for run_id in (finished.id, live.id, 99):
        folder = run_folder(home, run_id)
        folder.mkdir(parents=True)
        (folder / "policy.safetensors").write_bytes(b"\0" * 3 * 10**6)
    killed_reward_model = home / "reward_models" / f".base-rm-run1.tmp-{dead_pid()}"
    saving_reward_model = home / "reward_models" / f".base-rm-run2.tmp-{os.getpid()}"
    for folder in (killed_reward_model, saving_reward_model):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 10**6)

    dry = run_cli("clean", "--dry-run", home=home)
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout.decode() and abandoned.exists()

    result = run_cli("clean", home=home)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert not abandoned.exists() and not old_style.exists() and not run_folder(home, finished.id).exists()
    assert running.exists() and recent_old_style.exists()
    assert run_folder(home, live.id).exists() and run_folder(home, 99).exists()
    assert not killed_reward_model.exists() and saving_reward_model.exists()
    assert "Freed 6.0 MB" in out and f"training run {finished.id} (failed)" in out

    again = run_cli("clean", home=home)
    assert "Nothing to clean." in again.stdout.decode()


def test_the_app_start_removes_abandoned_imports(tmp_path, monkeypatch):
    from chat_tui.paths import models_dir
    from chat_tui.services.bootstrap import choose_model

    abandoned = staging_folder(models_dir(), "gone", dead_pid())
    with Store(tmp_path / "feedback.db") as store:
        version = store.register_model_version("base", str(tmp_path / "base"), activate=True)
        choice = choose_model(store, None, None, lambda label, text: None)
    assert choice.version_id == version.id
    assert not abandoned.exists()


def test_staging_folders_name_their_process():
    assert staging_prefix("tiny") == f".tiny.{os.getpid()}-"


def test_files_in_the_data_directory_are_private(tmp_path, tiny):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # a home the user made, open to others: what we create inside is not
    result = run_cli("models", "import", str(tiny), "--name", "tiny", home=home)
    assert result.returncode == 0, result.stderr
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert run_cli("feedback", "import", str(pairs), home=home).returncode == 0
    for path in home.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, (path, oct(mode))

"""Data-parallel training under `accelerate launch` with two CPU processes (gloo).

Each process trains on its own shard of the comparison groups; after every optimizer step
both must hold bit-identical weights (gradients averaged, same optimizer updates), and
the weights must have moved. A second test runs the whole `chat-tui train` pipeline with
two processes (`accelerate launch -m chat_tui train`) and checks it produces one new version.

accelerate's `--cpu` flag selects its single-process launcher, so the two processes are
started with `--multi_gpu` (torchrun); on a machine without GPUs they run on the CPU and
talk over gloo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chat_tui.paths import data_dir
from test_trainer_pipeline import add_feedback, base_state, install_base  # noqa: F401 (fixture)

TESTS = Path(__file__).parent

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from safetensors.torch import save_file
    sys.path.insert(0, sys.argv[2])
    from test_trainer_reward import scripted_groups, tiny_policy
    from trainer import lora
    from trainer.checkpoints import trainable_state
    from trainer.datasets import shard
    from trainer.dpo import DPOConfig, train_dpo
    from trainer.runtime import make_accelerator

    out = Path(sys.argv[1])
    accelerator = make_accelerator("cpu")
    rank = accelerator.process_index
    policy = tiny_policy(seed=0)  # the same initial weights in every process
    lora.apply_lora(policy, rank=4, alpha=8)
    if rank == 0:
        save_file(trainable_state(policy), str(out / "initial.safetensors"))
    groups = scripted_groups(16, seed=1)
    (out / f"rank{rank}-groups.json").write_text(json.dumps(
        [g.group_key for g in shard(groups, rank, accelerator.num_processes)]))

    def on_step(step, optimizer):
        save_file(trainable_state(policy), str(out / f"rank{rank}-step{step}.safetensors"))

    config = DPOConfig(epochs=1, lr=1e-2, groups_per_batch=2, max_steps=2, seed=0, nll_weight=0.0)
    train_dpo(policy, groups, [], config, accelerator, 0, on_step=on_step)
    print(f"process {rank} of {accelerator.num_processes} done", flush=True)
    """
)


def accelerate_launch(args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)


def test_two_processes_hold_identical_weights_after_each_step(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = accelerate_launch([str(script), str(tmp_path), str(TESTS)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "process 0 of 2 done" in output and "process 1 of 2 done" in output
    shard0 = json.loads((tmp_path / "rank0-groups.json").read_text())
    shard1 = json.loads((tmp_path / "rank1-groups.json").read_text())
    assert shard0 and shard1 and not set(shard0) & set(shard1)  # different data per process
    initial = load_file(str(tmp_path / "initial.safetensors"))
    for step in (1, 2):
        a = load_file(str(tmp_path / f"rank0-step{step}.safetensors"))
        b = load_file(str(tmp_path / f"rank1-step{step}.safetensors"))
        assert a.keys() == b.keys() == initial.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ between processes after step {step}"
        assert max(float((a[k] - initial[k]).abs().max()) for k in a) > 1e-3  # and they did train


@pytest.mark.parametrize("algo,top_layers", [("dpo", "0"), ("ppo", "1")])
def test_train_command_runs_data_parallel(base_state, chat_tui_home, algo, top_layers):  # noqa: F811
    store, _ = install_base(base_state)
    add_feedback(store)
    args = ["-m", "chat_tui", "train", "--algo", algo, "--steps", "2", "--device", "cpu", "--top-layers", top_layers,
            "--max-reply-tokens", "12", "--activate"]
    result = accelerate_launch(args, env={"CHAT_TUI_HOME": str(chat_tui_home)})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    versions = [v.name for v in store.list_model_versions()]
    assert versions == ["tiny", f"tiny-{algo}-run1"], output
    runs = store.list_training_runs()
    assert len(runs) == 1 and runs[0].status == "succeeded"
    assert output.count(f"saved model version 'tiny-{algo}-run1'") == 1  # printed by the main process only
    assert not (data_dir() / "training" / "run-1").exists()


def test_killed_launcher_stops_its_processes_and_the_rerun_resumes_one_run(base_state, chat_tui_home):  # noqa: F811
    """SIGKILL of `accelerate launch`: its two processes stop (they asked for SIGTERM when
    their parent dies) and record the run as cancelled; rerunning the same command
    resumes that run, and one version comes out."""
    import signal
    import time

    from trainer.run_lock import RunLock

    store, _ = install_base(base_state)
    add_feedback(store)
    args = ["-m", "chat_tui", "train", "--algo", "dpo", "--steps", "400", "--device", "cpu", "--top-layers", "0",
            "--max-reply-tokens", "12", "--activate"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "CHAT_TUI_HOME": str(chat_tui_home)}
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = data_dir() / "training" / "run-1" / "state.json"
    deadline = time.monotonic() + 240
    while not (state.is_file() and json.loads(state.read_text()).get("policy_step", 0) >= 2):
        assert launcher.poll() is None and time.monotonic() < deadline, "the run did not reach its second checkpoint"
        time.sleep(0.2)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    # Both processes stop and release the run lock; the run is cancelled, not left running.
    lock = RunLock(data_dir())
    while True:
        try:
            lock.acquire()
            break
        except Exception:
            assert time.monotonic() < deadline, "a process kept training after its launcher died"
            time.sleep(0.2)
    lock.release()
    while store.list_training_runs()[0].status == "running":
        assert time.monotonic() < deadline, "the run was not recorded as stopped"
        time.sleep(0.2)
    assert store.list_training_runs()[0].status == "cancelled"
    checkpointed = json.loads(state.read_text())["policy_step"]
    resumed = accelerate_launch(args, env={"CHAT_TUI_HOME": str(chat_tui_home)}, timeout=600)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert f"dpo: resuming at step {checkpointed} of 400" in output
    runs = store.list_training_runs()
    assert [(r.id, r.status) for r in runs] == [(1, "succeeded")]
    assert [v.name for v in store.list_model_versions()] == ["tiny", "tiny-dpo-run1"]

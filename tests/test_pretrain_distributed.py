"""`chat-tui pretrain` as two data-parallel processes (accelerate launch, gloo on CPU).

As in the trainer's distributed tests, `--multi_gpu` starts the processes with torchrun;
without GPUs they run on the CPU. One run must produce one model; a bad corpus must stop
both processes with the one-line error instead of leaving one waiting at a barrier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chat_tui.paths import models_dir
from trainer.pretrain_data import shakespeare_corpus_dir


def launch_pretrain(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "chat_tui.commands.pretrain", *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_two_processes_train_one_model():
    corpus = shakespeare_corpus_dir() / "tragedies" / "macbeth.md"
    result = launch_pretrain(["--data", str(corpus), "--out", "two-proc", "--vocab-size", "400", "--steps", "4",
                              "--device", "cpu"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("saved model version 'two-proc'") == 1  # only the main process reports
    config = json.loads((models_dir() / "two-proc" / "config.json").read_text())
    assert config["model_type"] == "palm"


def test_bad_corpus_stops_every_process(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n")
    result = launch_pretrain(["--data", str(corpus), "--out", "nothing"], timeout=120)
    assert result.returncode != 0
    assert f"Error: corpus '{corpus}' is empty" in result.stderr
    assert not (models_dir() / "nothing").exists()

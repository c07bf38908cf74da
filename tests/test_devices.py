"""`--device` names: what they resolve to, and the one-line errors for devices this
machine does not have, through the library and through each command that takes one."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from engine.devices import resolve_device
from engine.errors import DeviceError
from engine.loading import load_model
from trainer.errors import TrainerError
from trainer.runtime import make_accelerator

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without a GPU")


def test_names_of_devices_this_machine_has():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu:0") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    "name, message",
    [
        ("tpu", "unknown device 'tpu' (use auto, cpu, cuda, cuda:N or mps)"),
        ("", "unknown device ''"),
        ("cuda:-1", "unknown device 'cuda:-1'"),
        ("meta", "device 'meta' is not supported"),
    ],
)
def test_names_torch_or_chat_tui_does_not_take(name, message):
    with pytest.raises(DeviceError, match="^" + re.escape(message)):
        resolve_device(name)


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_gpu_on_a_machine_without_one(name):
    with pytest.raises(DeviceError, match=f"^device '{name}' was asked for, but torch sees no CUDA GPU"):
        resolve_device(name)


def pretend_gpus(monkeypatch, count: int) -> None:
    """This machine as torch would report one with `count` CUDA GPUs (only counts are read)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_a_gpu_index_past_the_last(monkeypatch):
    pretend_gpus(monkeypatch, 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match=r"^device 'cuda:2' does not exist: this machine has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_a_gpu_index_under_accelerate_launch_is_refused(monkeypatch):
    # Each launched process takes its local rank's GPU; an index would be silently ignored.
    pretend_gpus(monkeypatch, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainerError, match="under accelerate launch each process uses its own GPU"):
        make_accelerator("cuda:1")


def test_load_model_checks_the_device_before_reading_anything(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        load_model("default", device="tpu", store_root=store)
    assert not store.exists()  # the default model was not imported first


def run_chat_tui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from chat_tui.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy(), stdin=subprocess.DEVNULL)


COMMANDS = {
    "chat": [],
    "ask": ["ask", "hello"],
    "bench": ["bench", "--concurrency", "1", "--no-hf"],
    "train": ["train", "--steps", "1"],
    "pretrain": ["pretrain", "--data", __file__, "--out", "mine", "--steps", "1"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("device", ["tpu", pytest.param("cuda", marks=no_cuda)])
def test_commands_give_one_line_for_a_device_this_machine_lacks(command, device, chat_tui_home):
    args = COMMANDS[command]
    result = run_chat_tui(*args[:1], "--device", device, *args[1:]) if args else run_chat_tui("--device", device)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f"device '{device}'" in lines[0], result.stderr
    assert list(chat_tui_home.iterdir()) == []  # no database, no model store: nothing was written

"""What every training phase shares: the accelerator, the optimizer, NaN checks, seeding.

The same code runs as one CPU process or as several data-parallel processes under
`accelerate launch`: `make_accelerator` picks the device and precision (bf16 autocast on
GPU, fp32 on CPU, whose bf16 matmuls are slow), and models go through
`accelerator.prepare`, which wraps them for gradient averaging when there is more than one
process. Nothing here knows about a particular algorithm.
"""

from __future__ import annotations

import math
import random

import torch
from accelerate import Accelerator
from torch import nn

from trainer.errors import TrainerError, TrainingDivergedError

DEVICES = ("auto", "cpu", "cuda", "mps")


def make_accelerator(device: str = "auto", gradient_accumulation_steps: int = 1, mixed_precision: str | None = None) -> Accelerator:
    """An Accelerator on `device` ("auto": the GPU when there is one, else the CPU)."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise TrainerError(f"unknown device {device!r} (choose from {', '.join(DEVICES)})")
    if gradient_accumulation_steps < 1:
        raise TrainerError(f"gradient accumulation steps must be >= 1, got {gradient_accumulation_steps}")
    wants_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainerError(f"device {device!r} was asked for but no CUDA GPU is available")
    if mixed_precision is None:
        mixed_precision = "bf16" if wants_gpu and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(
        cpu=device == "cpu" or (device == "auto" and not torch.cuda.is_available()),
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python and torch; each process gets its own stream (seed + rank)."""
    random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainerError("nothing to train: every parameter of the model is frozen")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))


def check_finite(value: torch.Tensor | float, what: str, step: int) -> float:
    """The value as a float; TrainingDivergedError if it is NaN or infinite."""
    number = float(value.detach().float().item() if isinstance(value, torch.Tensor) else value)
    if not math.isfinite(number):
        raise TrainingDivergedError(f"{what} became {number} at step {step}; the run was stopped")
    return number


def gather_mean(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over processes (identity for one process)."""
    if accelerator.num_processes == 1 or not values:
        return dict(values)
    keys = sorted(values)
    local = torch.tensor([values[k] for k in keys], device=accelerator.device, dtype=torch.float64)
    total = accelerator.reduce(local, reduction="mean")
    return {k: float(v) for k, v in zip(keys, total.tolist())}


def unwrap(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    return accelerator.unwrap_model(model)

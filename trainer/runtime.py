"""What every training phase shares: the accelerator, the optimizer, NaN checks, seeding.

The same code runs as one CPU process or as several data-parallel processes under
`accelerate launch`: `make_accelerator` picks the device and precision (bf16 autocast on
GPU, fp32 on CPU, whose bf16 matmuls are slow), and models go through
`accelerator.prepare`, which wraps them for gradient averaging when there is more than one
process. Nothing here knows about a particular algorithm.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from engine.devices import resolve_device
from trainer.errors import TrainerError, TrainingDivergedError


def make_accelerator(device: str = "auto", gradient_accumulation_steps: int = 1, mixed_precision: str | None = None) -> Accelerator:
    """An Accelerator on `device` ("auto": the GPU when there is one, else the CPU).

    In one process, a GPU index (cuda:1) picks the GPU. Under `accelerate launch` each
    process takes its local rank's GPU, so an index there is refused rather than ignored.
    """
    if gradient_accumulation_steps < 1:
        raise TrainerError(f"gradient accumulation steps must be >= 1, got {gradient_accumulation_steps}")
    target = resolve_device(device)
    if target.type == "cuda" and target.index is not None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise TrainerError(
                f"device {device!r}: under accelerate launch each process uses its own GPU; pass --device cuda"
            )
        # A single process's Accelerator uses "cuda", which means the current GPU.
        torch.cuda.set_device(target.index)
    check_launch()
    if mixed_precision is None:
        mixed_precision = "bf16" if target.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(
        cpu=target.type == "cpu",
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def check_launch() -> None:
    """A one-line error, before anything starts, for an `accelerate launch` that will not
    do what was asked: FSDP or DeepSpeed (both shard the models across processes; the
    trainer prepares several models at once and generates from the unwrapped policy,
    which sharded engines do not allow: DDP is the supported engine), or `--cpu` with
    several processes (accelerate starts one; it expects mpirun for more)."""
    for flag, engine in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(flag, "").lower() == "true":
            raise TrainerError(f"accelerate's {engine} engine is not supported: chat-tui trains data-parallel with "
                               f"DDP (accelerate launch --multi_gpu --num_processes N -m chat_tui train ...)")
    asked_several = os.environ.get("MASTER_ADDR") and "WORLD_SIZE" not in os.environ
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and asked_several:
        raise TrainerError("accelerate launch --cpu runs a single process; for several CPU processes use "
                           "CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes N -m chat_tui train "
                           "--device cpu")


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python and torch; each process gets its own stream (seed + rank)."""
    random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainerError("nothing to train: every parameter of the model is frozen")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))


def train_step(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    compute_loss: Callable[[], tuple[torch.Tensor, dict[str, Any]]],
    max_grad_norm: float,
    what: str,
    step: int,
) -> tuple[float, dict[str, Any]]:
    """One optimizer step of a prepared model: the loss under autocast, its backward pass,
    gradient-norm clipping and the update (accumulated over `gradient_accumulation_steps`
    calls by accelerate). Returns (the loss as a float, the statistics compute_loss gave);
    TrainingDivergedError, before any update, when the loss is not finite."""
    with accelerator.accumulate(model):
        with accelerator.autocast():
            loss, stats = compute_loss()
        value = check_finite(loss, what, step)
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    return value, stats


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


def global_masked_whiten(accelerator: Accelerator, x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked positions of every process together (the unbiased
    variance, as in ops.masked_whiten); masked-out positions come back as 0. With one
    process this is ops.masked_whiten."""
    if accelerator.num_processes == 1:
        from trainer.ops import masked_whiten

        return masked_whiten(x, mask, eps=eps)
    x64, m64 = x.double(), mask.double()
    local = torch.stack([(x64 * m64).sum(), (x64 * x64 * m64).sum(), m64.sum()]).to(accelerator.device)
    total, total_sq, count = accelerator.reduce(local, reduction="sum").tolist()
    mean = total / max(count, 1.0)
    var = max(total_sq / max(count, 1.0) - mean * mean, 0.0)
    if count > 1:
        var = var * count / (count - 1)
    return ((x - mean) * (1.0 / (var + eps) ** 0.5)) * mask


def unwrap(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    return accelerator.unwrap_model(model)
